"""All-layer MAC against Captum's per-layer loop, RAM's published loop and the hardware floor, in time and memory.

    python benchmarks/bench_mac.py --quick                      # a few minutes on a 2-core CPU
    python benchmarks/bench_mac.py --json out.json              # the full table
    python benchmarks/bench_mac.py --device cuda --bf16         # on a GPU
    python benchmarks/bench_mac.py --paper-swinir --device cuda --bf16 --images 70   # RAM's analysis net
    python benchmarks/bench_mac.py --scaling docs/img           # scaling curves (PNG)
    python benchmarks/bench_mac.py --quick --allocator jemalloc # every method on jemalloc (or tcmalloc), preloaded
    python benchmarks/bench_mac.py --quick --allocator glibc-kept --fused-accumulation   # the CPU overhead's floor

Memory: every (network, size, n_steps, method) runs once in a fresh process, so
its peak is that method's own (CPU: peak resident set size above the process's
size after setup; CUDA: ``torch.cuda.max_memory_allocated`` above the allocation
after setup). Time: the methods of one configuration then run interleaved in one
process, round after round (one warm-up round), and each keeps its best of at
least ``--reps`` runs, repeated until they add up to ``MIN_TIMED_S`` (at most
``MAX_REPS``: short runs are the noisiest); a method whose single run took 20 s
or more keeps that time and is not repeated. The JSON rows also give each
method's minor page faults per timed run (the median, ``minor_faults``; absent
for a run that was not repeated).

Methods:
- ``mac``: ``LayerMAC`` over all candidate layers in one call;
- ``linear``: ``LayerPathConductance`` along the linear path, all layers;
- ``floor``: (N + 1) × (forward + backward to the input), one grid point per pass;
- ``batched floor``: the same forward and backward passes, with as many grid points
  per pass as ``LayerMAC`` chooses automatically. No exact all-layer method can
  cost less (it needs every layer's value and gradient at every grid point), so
  ``Captum s / batched floor s`` is the largest speed-up attainable (``bound``);
- ``held floor``: the batched floor with every layer's output kept until its
  gradient has gone by (a forward hook and a tensor hook per layer, no
  arithmetic): what an exact all-layer method pays for holding the values
  alone (``held/bat``); ``MAC/batch`` above it is macattr's own arithmetic and
  Python;
- ``read floor``: the held floor that also reads each layer's value and gradient
  once, as the gradient goes by (one ``torch.dot`` of the two per layer and
  pass, or a sum of each where one is not contiguous; no other arithmetic): the
  least a method pays that, like macattr, takes each gradient from a tensor hook
  and sums ``g · Δy`` per layer outside autograd's own kernels (``read/bat``);
- ``bulk read floor``: the batched floor that also reads every layer's value and
  gradient once with no Python per layer in the backward pass: autograd returns
  all the layers' gradients of a pass together (captured in C++, held until the
  pass ends) and two multi-tensor norms read them (``bulk/bat``);
- ``accumulate``: that arithmetic alone, ``macattr.accumulators.ConductanceSum``
  fed every layer's value and gradient pass by pass as ``LayerMAC`` feeds them
  (one grid point, then the automatic pass size), on tensors captured once
  (``acc/bat`` = its time / batched floor). ``allow µs`` is the time per layer
  and pass the target leaves: 0.05 × batched floor / (layers × passes);
- ``captum``: ``captum.attr.LayerConductance`` once per layer with
  ``method="riemann_trapezoid"`` (macattr's grid; all N + 1 grid points in one
  batch), and ``captum GL`` with Captum's default ``gausslegendre``. When that
  is too slow for every layer, a subset evenly spread through depth is timed
  and the time per layer extrapolated linearly to all L layers (``timed``);
- ``RAM ref``: the RAM authors' analysis as published, re-implemented from its
  description: one image and one grid point per pass in float32, the soft mask
  built pixel by pixel in Python, a full backward pass (parameter gradients
  included) and every layer hooked; a few grid points are timed and the time
  extrapolated to all N + 1.

Targets (a row passes when both hold): MAC s / batched floor s ≤ 1.05 and
speed-up / bound ≥ 0.9; memory: peak at N = 200 / peak at N = 8 ≤ 1.10 and MAC's
peak ≤ 1.2 × the batched floor's. ``held MB`` is what an exact all-layer method must hold above the batched
floor (the layer outputs autograd does not save, over one pass, plus per layer a running sum, the last value
and the last gradient); ``MB bound`` = (batched floor + held) / batched floor is the least memory ratio any
such method can reach at macattr's pass size.

What is left of MAC's overhead without page faults and with the fewest memory passes of its arithmetic:
``--allocator glibc-kept`` runs every method on glibc's malloc told to keep the memory it frees
(``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` at 1 GB, so no pass faults its memory in again), and
``--fused-accumulation`` times ``mac``, ``linear`` and ``accumulate`` with each layer's accumulation of a pass
as one ``torch.compile``'d kernel (``bench_variants.py``'s ``fused_accumulation``; compiled in the warm-up
round, so the times exclude compilation, and timed however long they take; the memory columns stay those of
the plain engine). glibc versions that refuse an mmap threshold above 32 MiB fault more, not less, under
``glibc-kept``: ``minor_faults`` shows which.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

import macattr
from bench_networks import NETWORKS
from bench_variants import FusedConductanceSum
from macattr import LayerMAC, LayerPathConductance, targets
from macattr.accumulators import ConductanceSum
from macattr.engine import planning_passes

REFERENCE_STEPS = 4  # grid points the published loop is timed on
TIME_TARGET, BOUND_TARGET, GROWTH_TARGET, MEMORY_TARGET = 1.05, 0.9, 1.10, 1.2
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks
LONG_RUN_S = 20.0  # a first run this long is timed once: warm-up effects are negligible against it
FUSED_METHODS = ("mac", "linear", "accumulate")  # the methods --fused-accumulation changes
MIN_TIMED_S = 3.0
MAX_REPS = 12


def _rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(config: Dict[str, Any]):
    torch.manual_seed(0)
    build, kind = NETWORKS[config["network"]]
    device = torch.device(config["device"])
    model = build(config["quick"]).to(device).eval()
    x = torch.rand(config["batch"], 3, config["size"], config["size"], device=device)
    if kind == "image":
        forward, target = targets.gradient_magnitude(model), None
    else:
        forward, target = model, 0
    layers = list(macattr.candidate_layers(model).values())
    return forward, target, layers, x


def _grid_passes(forward, target, x: torch.Tensor, n_steps: int, steps_per_pass: int):
    """Per pass of ``steps_per_pass`` of the N + 1 grid points: its input points (requiring grad) and the
    summed target score of their forward pass."""
    for chunk in torch.linspace(0, 1, n_steps + 1, device=x.device).split(steps_per_pass):
        point = (chunk.reshape(-1, 1, 1, 1, 1) * x).flatten(0, 1).requires_grad_()
        out = forward(point)
        yield point, (out if target is None else out[:, target]).sum()


def _floor(forward, target, x: torch.Tensor, n_steps: int, steps_per_pass: int = 1,
           layers: Sequence[torch.nn.Module] = (), read: bool = False) -> None:  # fmt: skip
    """(N + 1) grid points of forward + backward to the input, ``steps_per_pass`` per pass.

    ``layers``: also keep each layer's output alive until its gradient has gone by, and do nothing else with
    it (the held floor: what holding the values costs in time, without any arithmetic on them). ``read``:
    then read the value and the gradient once, a dot product of the two (the read floor; a sum of each
    where one of them is not contiguous).
    """
    held: Dict[int, torch.Tensor] = {}

    def hold(module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            key = len(held)
            held[key] = output

            def release(grad: torch.Tensor) -> None:
                value = held.pop(key, None)
                if read and value is not None:
                    value = value.detach()
                    if value.is_contiguous() and grad.is_contiguous():
                        torch.dot(value.reshape(-1), grad.reshape(-1))
                    else:  # another memory layout: read each once where it lies, copying neither
                        value.sum()
                        grad.sum()

            output.register_hook(release)

    handles = [layer.register_forward_hook(hold) for layer in layers]
    try:
        for point, score in _grid_passes(forward, target, x, n_steps, steps_per_pass):
            torch.autograd.grad(score, point)
            held.clear()
    finally:
        for handle in handles:
            handle.remove()


def _bulk_read_floor(forward, target, x: torch.Tensor, n_steps: int, steps_per_pass: int,
                     layers: Sequence[torch.nn.Module]) -> None:  # fmt: skip
    """The batched floor that also reads every layer's output and its gradient once, with no Python per layer
    in the backward pass: the outputs are kept in a list, one ``autograd.grad`` call returns their gradients
    with the input's (autograd captures them in C++ and holds them to the end of the pass), and two
    multi-tensor norms read the values and the gradients."""
    outputs: List[torch.Tensor] = []

    def keep(module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            outputs.append(output)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        for point, score in _grid_passes(forward, target, x, n_steps, steps_per_pass):
            grads = torch.autograd.grad(score, [point, *outputs], allow_unused=True)[1:]
            read = [(value.detach(), grad) for value, grad in zip(outputs, grads) if grad is not None]
            torch._foreach_norm([value for value, _ in read])
            torch._foreach_norm([grad for _, grad in read])
            outputs.clear()
    finally:
        for handle in handles:
            handle.remove()
        outputs.clear()


def _automatic_steps(forward, target, layers, x: torch.Tensor) -> int:
    """The grid points per pass that LayerMAC chooses for ``x``, as a sweep of one step reports them."""
    chosen: List[int] = []
    with planning_passes(report=lambda memory, steps: chosen.append(steps)):
        LayerMAC(forward, layers).attribute(x, target=target, n_steps=1, seed=0)
    return chosen[0]


def _held_bytes(forward, layers, x: torch.Tensor, steps: int) -> int:
    """The least memory an exact all-layer method holds above the batched floor, for passes of ``steps`` points.

    It holds every layer's value until that layer's gradient arrives: where autograd saves the tensor anyway
    this costs nothing, elsewhere (a conv whose output only a ReLU reads, the ReLU saving its own output) it is
    memory the batched floor frees at once. Across passes it keeps, per layer and for one grid point, the
    running sum, the last value and the last gradient. Batched floor + these bytes is the least peak memory
    such a method can reach at this pass size.
    """
    saved, outputs = set(), []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    handles = [layer.register_forward_hook(lambda module, args, out: outputs.append(out)) for layer in layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(torch.cat([x] * steps).requires_grad_())
    finally:
        for handle in handles:
            handle.remove()
    tensors = [t for out in outputs for t in (out if isinstance(out, (tuple, list)) else (out,))
               if isinstance(t, torch.Tensor) and t.is_floating_point()]  # fmt: skip
    unsaved = sum(t.numel() * t.element_size() for t in tensors if t.untyped_storage().data_ptr() not in saved)
    per_point = sum(t.numel() * t.element_size() for t in tensors) // steps
    return unsaved + 3 * per_point


def _captured_pass(forward, layers, x: torch.Tensor, steps: int) -> List[torch.Tensor]:
    """Every layer's floating-point output tensors for one pass of ``steps`` grid points, detached."""
    outputs: List[torch.Tensor] = []

    def keep(module, args, out) -> None:
        items = out if isinstance(out, (tuple, list)) else (out,)
        outputs.extend(t.detach() for t in items if isinstance(t, torch.Tensor) and t.is_floating_point())

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.no_grad():
            forward(torch.cat([x] * steps))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _passes(n_steps: int, steps: int) -> List[int]:
    """Grid points per pass of LayerMAC's sweep over N + 1 points: one, then ``steps`` at a time."""
    return [1] + [min(steps, n_steps + 1 - first) for first in range(1, n_steps + 1, steps)]


def _accumulate(values: List[torch.Tensor], grads: List[torch.Tensor], n_steps: int, steps: int,
                accumulator: Optional[Callable] = None) -> None:  # fmt: skip
    """LayerMAC's arithmetic alone: each layer's conductance sum over the sweep's passes (the captured pass
    of ``steps`` points, or its first rows, stands for every pass)."""
    sums = [(accumulator or ConductanceSum)() for _ in values]
    for points in _passes(n_steps, steps):
        for total, value, grad in zip(sums, values, grads):
            rows = value.shape[0] // steps
            shape = (points, rows, *value.shape[1:])
            total.update(value[: points * rows].reshape(shape), grad[: points * rows].reshape(shape), None)


@dataclass
class Case:
    """What a timed method runs on: the configuration (JSON), the network's forward function, Captum's target, the
    candidate layers, the input, and what the method's ``prepare`` fixed beforehand (``prepared``)."""

    config: Dict[str, Any]
    forward: Callable
    target: Any
    layers: List[torch.nn.Module]
    x: torch.Tensor
    prepared: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.config["n_steps"]

    @property
    def accumulator(self) -> Any:
        """The running sum the engine uses: macattr's, or the fused variant under ``--fused-accumulation``."""
        return FusedConductanceSum if self.config.get("fused_accumulation") else None


@dataclass(frozen=True)
class Timed:
    """One timed method: ``run(case)`` is what is timed; ``prepare(case)`` fixes what it needs (returned into
    ``case.prepared``) before the clock starts."""

    run: Callable[[Case], None]
    prepare: Optional[Callable[[Case], Dict[str, Any]]] = None


def _mac(case: Case) -> None:
    LayerMAC(case.forward, case.layers, accumulator=case.accumulator).attribute(
        case.x, target=case.target, n_steps=case.n_steps, seed=0,
        internal_batch_size=case.config.get("internal_batch_size"),
    )  # fmt: skip


def _linear(case: Case) -> None:
    LayerPathConductance(case.forward, case.layers, accumulator=case.accumulator).attribute(
        case.x, target=case.target, n_steps=case.n_steps, internal_batch_size=case.config.get("internal_batch_size")
    )


def _floor_steps(case: Case) -> Dict[str, Any]:
    return {"floor_steps": _automatic_steps(case.forward, case.target, case.layers, case.x)}


def _accumulation_inputs(case: Case) -> Dict[str, Any]:
    steps = _automatic_steps(case.forward, case.target, case.layers, case.x)
    values = _captured_pass(case.forward, case.layers, case.x, steps)
    return {"floor_steps": steps, "values": values, "grads": [torch.randn_like(value) for value in values]}


def _captum_choice(case: Case) -> Dict[str, Any]:
    return {"captum_chosen": _captum_layers(case.forward, case.target, case.layers, case.x,
                                            case.config["captum_layers"])}  # fmt: skip


def _captum(rule: str) -> Callable[[Case], None]:
    def run(case: Case) -> None:
        from captum.attr import LayerConductance

        for layer in case.prepared["captum_chosen"]:
            LayerConductance(case.forward, case.layers[layer]).attribute(
                case.x, target=case.target, n_steps=case.n_steps, method=rule,
                internal_batch_size=case.config.get("captum_internal_batch_size"),
            )  # fmt: skip

    return run


def _floor_run(**kwargs: Any) -> Callable[[Case], None]:
    """One of the floors: the batched floor with ``kwargs`` (``held``: hold every layer's output; ``read``:
    and read it)."""
    held = kwargs.pop("held", False)

    def run(case: Case) -> None:
        layers = case.layers if held else ()
        _floor(case.forward, case.target, case.x, case.n_steps, case.prepared["floor_steps"], layers, **kwargs)

    return run


METHODS: Dict[str, Timed] = {
    "mac": Timed(_mac),
    "linear": Timed(_linear),
    "floor": Timed(lambda case: _floor(case.forward, case.target, case.x, case.n_steps)),
    "batched_floor": Timed(_floor_run(), _floor_steps),
    "held_floor": Timed(_floor_run(held=True), _floor_steps),
    "read_floor": Timed(_floor_run(held=True, read=True), _floor_steps),
    "bulk_read_floor": Timed(
        lambda case: _bulk_read_floor(
            case.forward, case.target, case.x, case.n_steps, case.prepared["floor_steps"], case.layers
        ),
        _floor_steps,
    ),  # fmt: skip
    "accumulate": Timed(
        lambda case: _accumulate(
            case.prepared["values"],
            case.prepared["grads"],
            case.n_steps,
            case.prepared["floor_steps"],
            case.accumulator,
        ),
        _accumulation_inputs,
    ),  # fmt: skip
    "captum": Timed(_captum("riemann_trapezoid"), _captum_choice),
    "captum_gl": Timed(_captum("gausslegendre"), _captum_choice),
    "ram_reference": Timed(
        lambda case: _ram_reference(case.forward, case.target, case.layers, case.x, case.n_steps, REFERENCE_STEPS)
    ),  # fmt: skip
}
"""Every timed method by name (see the module text)."""


def _ram_reference(forward, target, layers, x: torch.Tensor, n_steps: int, timed_steps: int) -> None:
    """The published loop on ``timed_steps`` of the N + 1 grid points, image by image (see the module text)."""
    outputs: List[Any] = [None] * len(layers)
    grads: List[Any] = [None] * len(layers)

    def capture(index: int):
        def hook(module, args, output):
            outputs[index] = output

            def keep(grad):
                grads[index] = grad

            output.register_hook(keep)

        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    model = forward.model if hasattr(forward, "model") else forward
    try:
        for image in x.split(1):
            height, width = image.shape[-2:]
            order = torch.randperm(height * width).tolist()
            sums: List[Any] = [0.0] * len(layers)
            last: List[Any] = []
            for step in range(timed_steps):
                alpha = 0.5 + 0.5 * step / n_steps
                mask = [0.0] * (height * width)
                for position, pixel in enumerate(order[: math.ceil(len(order) * alpha)]):
                    mask[pixel] = 1 / (1 + math.exp(-1e4 * (alpha - position / len(order))))
                soft = torch.tensor(mask, device=x.device).reshape(height, width)
                point = (image * soft).requires_grad_()
                model.zero_grad()
                out = forward(point)
                (out if target is None else out[:, target]).sum().backward()
                now = [o.detach() for o in outputs]
                if step:
                    sums = [c + g * (y - p) for c, g, y, p in zip(sums, grads, now, last)]
                last = now
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)


def _captum_layers(forward, target, layers, x, count: int) -> List[int]:
    """``count`` layer indices spread evenly through depth on which Captum's LayerConductance runs.

    Captum needs the batch as a layer output's first dimension; window-attention
    layers ((B · windows, n, C)) make it fail, so such layers are skipped.
    """
    from captum.attr import LayerConductance

    spread = sorted(range(len(layers)), key=lambda i: min(abs(i - round(k * (len(layers) - 1) / max(count - 1, 1)))
                                                         for k in range(count)))  # fmt: skip
    chosen: List[int] = []
    for index in spread:
        try:
            LayerConductance(forward, layers[index]).attribute(x, target=target, n_steps=2)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            continue
        chosen.append(index)
        if len(chosen) == count:
            break
    return chosen


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run_timed(case: Case) -> float:
    started = time.perf_counter()
    METHODS[case.config["method"]].run(case)
    _sync(case.config["device"])
    return time.perf_counter() - started


def _case(config: Dict[str, Any], forward, target, layers, x) -> Case:
    """The case of ``config``'s method, with what it needs prepared."""
    case = Case(config, forward, target, layers, x)
    prepare = METHODS[config["method"]].prepare
    case.prepared = prepare(case) if prepare is not None else {}
    return case


def memory_worker(config: Dict[str, Any]) -> Dict[str, Any]:
    """One run of one method in this (fresh) process: its peak memory and the time of that run."""
    torch.set_num_threads(config["threads"])
    forward, target, layers, x = _setup(config)
    cuda = config["device"].startswith("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config["bf16"]):
        case = _case(dict(config, fused_accumulation=False), forward, target, layers, x)  # memory: the plain engine
        _floor(forward, target, x, 0)  # one grid point forward and backward: first-call allocations, for every method
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _rss_bytes()
        out_of_memory = False
        try:
            elapsed = _run_timed(case)
        except torch.OutOfMemoryError:
            if config["method"] != "captum":
                raise
            out_of_memory = True  # retried below, once the traceback no longer holds the tensors
        if out_of_memory:
            # Captum's default puts all N + 1 grid points in one batch; on OOM, 32 rows per pass instead
            torch.cuda.empty_cache()
            case.config["captum_internal_batch_size"] = 32 * x.shape[0]
            torch.cuda.reset_peak_memory_stats()
            elapsed = _run_timed(case)
        peak = (
            torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ) - base
    covered = len(case.prepared.get("captum_chosen", layers))
    steps = _automatic_steps(forward, target, layers, x) if config["method"] == "mac" else None
    held = _held_bytes(forward, layers, x, steps) if steps is not None else 0
    return {
        "steps_per_pass": steps,
        "time_s": elapsed,
        "peak_mb": max(peak, 0) / 2**20,
        "layers_covered": covered,
        "layers": len(layers),
        "captum_internal_batch_size": case.config.get("captum_internal_batch_size"),
        "held_mb": held / 2**20,
    }


def timing_worker(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Best time of each of ``config["runs"]`` (method settings), run interleaved in this process, and the
    median number of minor page faults of its timed repetitions.

    One warm-up round, then rounds until every run has at least ``reps`` timed
    repetitions adding up to ``MIN_TIMED_S`` (at most ``MAX_REPS``).
    """
    torch.set_num_threads(config["threads"])
    forward, target, layers, x = _setup(config)
    runs = [dict(config, **run) for run in config["runs"]]
    cuda = config["device"].startswith("cuda")
    times: List[List[float]] = [[] for _ in runs]
    faults: List[List[int]] = [[] for _ in runs]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config["bf16"]):
        cases = [_case(run, forward, target, layers, x) for run in runs]
        for _ in range(MAX_REPS + 1):
            pending = [i for i, t in enumerate(times) if len(t) <= config["reps"] or sum(t[1:]) < MIN_TIMED_S]
            if not pending:
                break
            for i in pending:
                if cuda:
                    torch.cuda.empty_cache()  # what one run cached must not crowd out the next
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times[i].append(_run_timed(cases[i]))
                faults[i].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return [dict(time_s=min(t[1:]), minor_faults=statistics.median_high(f[1:])) for t, f in zip(times, faults)]


def _in_fresh_process(mode: str, config: Dict[str, Any]) -> Any:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(dict(config, mode=mode))],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{mode} worker failed for {config}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(
    common: Dict[str, Any], runs: Dict[str, Dict[str, Any]], skip_failed: bool = False
) -> Dict[str, Dict[str, Any]]:
    """Peak memory of each run (a fresh process each), then the runs' times, interleaved in one process.

    A run whose single measured run took ``LONG_RUN_S`` or more keeps that time and is not repeated.
    ``skip_failed``: leave out runs that fail (out of memory, say) instead of raising.
    """
    results = {}
    for name, run in runs.items():
        try:
            results[name] = _in_fresh_process("memory", dict(common, **run))
        except RuntimeError as error:
            if not skip_failed:
                raise
            print(f"{name}: failed ({str(error).splitlines()[-1]})")
    runs = {name: run for name, run in runs.items() if name in results}
    fused = FUSED_METHODS if common.get("fused_accumulation") else ()  # the memory run did not fuse: time them
    timed = [name for name, run in runs.items() if results[name]["time_s"] < LONG_RUN_S or run["method"] in fused]
    short = {name: dict(runs[name], captum_internal_batch_size=results[name]["captum_internal_batch_size"])
             for name in timed}  # fmt: skip
    if short and common["reps"] > 0:
        best = _in_fresh_process("timing", dict(common, runs=list(short.values())))
        for name, timing in zip(short, best):
            results[name].update(timing)
    return results


def plan(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The configurations to measure: per network, its input sizes and the step counts."""
    sizes = {"dncnn": [32] if args.quick else [32, 64], "swinir-small": [32] if args.quick else [32, 64],
             "swinir": [64], "resnet18": [32]}  # fmt: skip
    if args.device.startswith("cuda"):
        sizes.update(dncnn=[64, 128])
    steps = args.steps or ([32] if args.quick else [32, 200])
    rows = []
    for network in args.networks:
        for size in sizes[network]:
            for n_steps in steps:
                rows.append(dict(network=network, size=size, n_steps=n_steps, batch=args.batch))
    return rows


def run_row(row: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    common = dict(row, device=args.device, quick=args.quick, threads=args.threads, bf16=args.bf16,
                  captum_layers=args.captum_layers, reps=args.reps,
                  fused_accumulation=args.fused_accumulation)  # fmt: skip
    results = measure(common, {method: {"method": method} for method in METHODS})
    layers = results["mac"]["layers"]

    def captum_all(name: str) -> float:
        return results[name]["time_s"] * layers / results[name]["layers_covered"]

    mac, batched, steps = results["mac"], results["batched_floor"], results["mac"]["steps_per_pass"]
    captum = captum_all("captum")
    reference = results["ram_reference"]["time_s"] * (row["n_steps"] + 1) / REFERENCE_STEPS
    out = dict(
        row,
        layers=layers,
        mac_s=mac["time_s"],
        linear_s=results["linear"]["time_s"],
        floor_s=results["floor"]["time_s"],
        batched_floor_s=batched["time_s"],
        held_floor_s=results["held_floor"]["time_s"],
        read_floor_s=results["read_floor"]["time_s"],
        bulk_read_floor_s=results["bulk_read_floor"]["time_s"],
        accumulate_s=results["accumulate"]["time_s"],
        captum_s=captum,
        captum_gl_s=captum_all("captum_gl"),
        ram_reference_s=reference,
        captum_layers_timed=results["captum"]["layers_covered"],
        captum_internal_batch_size=results["captum"]["captum_internal_batch_size"],
        speedup=captum / mac["time_s"],
        speedup_bound=captum / batched["time_s"],
        mac_over_batched=mac["time_s"] / batched["time_s"],
        held_over_batched=results["held_floor"]["time_s"] / batched["time_s"],
        read_over_batched=results["read_floor"]["time_s"] / batched["time_s"],
        bulk_over_batched=results["bulk_read_floor"]["time_s"] / batched["time_s"],
        accumulate_over_batched=results["accumulate"]["time_s"] / batched["time_s"],
        allowance_us=1e6 * (TIME_TARGET - 1) * batched["time_s"] / (layers * len(_passes(row["n_steps"], steps))),
        mac_mb=mac["peak_mb"],
        batched_floor_mb=batched["peak_mb"],
        captum_mb=results["captum"]["peak_mb"],
        held_mb=mac["held_mb"],
        minor_faults={method: results[method].get("minor_faults") for method in METHODS},
    )
    out["speedup_over_bound"] = out["speedup"] / out["speedup_bound"]
    out["memory_over_batched"] = out["mac_mb"] / max(out["batched_floor_mb"], 1e-9)
    out["memory_bound"] = (out["batched_floor_mb"] + out["held_mb"]) / max(out["batched_floor_mb"], 1e-9)
    out["time_pass"] = out["mac_over_batched"] <= TIME_TARGET and out["speedup_over_bound"] >= BOUND_TARGET
    out["memory_pass"] = out["memory_over_batched"] <= MEMORY_TARGET
    return out


def memory_rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Peak memory of all-layer MAC at n_steps = 8 and 200 (each in a fresh process)."""
    out = []
    for network in args.networks:
        size = 32 if not args.device.startswith("cuda") else 64
        common = dict(network=network, size=size, batch=args.batch, device=args.device, quick=args.quick,
                      threads=args.threads, bf16=args.bf16, captum_layers=1, reps=0, method="mac")  # fmt: skip
        low, high = (_in_fresh_process("memory", dict(common, n_steps=n)) for n in (8, 200))
        ratio = high["peak_mb"] / max(low["peak_mb"], 1e-9)
        out.append(dict(network=network, size=size, mb_8=low["peak_mb"], mb_200=high["peak_mb"], ratio=ratio,
                        passed=ratio <= GROWTH_TARGET))  # fmt: skip
    return out


def batch_size_rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """GPU: all-layer MAC through the SwinIR-style network at 64×64 for several grid points per pass."""
    common = dict(network="swinir", size=64, batch=args.batch, n_steps=200, device=args.device, quick=args.quick,
                  threads=args.threads, bf16=args.bf16, captum_layers=1, reps=args.reps)  # fmt: skip
    runs = {"floor": {"method": "floor"}}
    for steps in (1, 4, 16, 64, None):
        ibs = None if steps is None else steps * args.batch
        runs["auto" if steps is None else str(steps)] = {"method": "mac", "internal_batch_size": ibs}
    results = measure(common, runs, skip_failed=True)
    floor = results.pop("floor")
    return [dict(steps_per_pass=label, mac_s=r["time_s"], floor_s=floor["time_s"], ratio=r["time_s"] / floor["time_s"],
                 mac_mb=r["peak_mb"]) for label, r in results.items()]  # fmt: skip


def _captum_timed(r: Dict[str, Any]) -> str:
    return str(r["captum_layers_timed"]) + ("*" if r["captum_internal_batch_size"] else "")


# the main table's columns, declared once: header, format, the row's value (a key or a function of the row)
COLUMNS: List[Tuple[str, str, Any]] = [
    ("network", "<12s", "network"), ("L", "4d", "layers"), ("size", "4d", "size"), ("N", "4d", "n_steps"),
    ("MAC s", "8.2f", "mac_s"), ("linear s", "8.2f", "linear_s"), ("floor s", "8.2f", "floor_s"),
    ("batched", "8.2f", "batched_floor_s"), ("held s", "7.2f", "held_floor_s"), ("read s", "7.2f", "read_floor_s"),
    ("bulk s", "7.2f", "bulk_read_floor_s"), ("acc s", "7.2f", "accumulate_s"), ("Captum s", "9.2f", "captum_s"),
    ("Capt GL s", "9.2f", "captum_gl_s"), ("RAM ref s", "9.2f", "ram_reference_s"), ("timed", ">5s", _captum_timed),
    ("speed-up", "8.1f", "speedup"), ("bound", "6.1f", "speedup_bound"), ("MAC/batch", "9.3f", "mac_over_batched"),
    ("held/bat", "8.3f", "held_over_batched"), ("read/bat", "8.3f", "read_over_batched"),
    ("bulk/bat", "8.3f", "bulk_over_batched"), ("acc/bat", "7.3f", "accumulate_over_batched"),
    ("allow µs", "8.1f", "allowance_us"), ("sp/bound", "8.3f", "speedup_over_bound"), ("MAC MB", "7.1f", "mac_mb"),
    ("batch MB", "8.1f", "batched_floor_mb"), ("held MB", "7.1f", "held_mb"),
    ("MB ratio", "8.2f", "memory_over_batched"), ("MB bound", "8.2f", "memory_bound"),
    ("time", ">4s", lambda r: _verdict(r["time_pass"])), ("mem", ">4s", lambda r: _verdict(r["memory_pass"])),
]  # fmt: skip


def _width(spec: str) -> int:
    return int("".join(ch for ch in spec.lstrip("<>") if ch.isdigit() or ch == ".").split(".")[0])


ROW_HEADER = " ".join(f"{header:{'<' if spec.startswith('<') else '>'}{_width(spec)}s}" for header, spec, _ in COLUMNS)


def format_row(r: Dict[str, Any]) -> str:
    """One row of the main table, in the columns of ``COLUMNS``."""
    return " ".join(format(value(r) if callable(value) else r[value], spec) for _, spec, value in COLUMNS)


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


TARGETS = (f"targets: MAC/batch <= {TIME_TARGET} and sp/bound >= {BOUND_TARGET} (time); "
           f"MB ratio (MAC / batched floor) <= {MEMORY_TARGET} (mem); MB bound = (batched floor + held) / batched "
           "floor, the least MB ratio of any exact all-layer method at this pass size; read/bat and bulk/bat: "
           "the least MAC/batch of a method that reads every layer's value and gradient once outside autograd's "
           "kernels, from tensor hooks (read) or all at the pass's end (bulk)")  # fmt: skip


def print_tables(rows: List[Dict], memory: List[Dict], batches: List[Dict]) -> None:
    print(ROW_HEADER)
    print("-" * len(ROW_HEADER))
    for r in rows:
        print(format_row(r))
    if any(r["captum_internal_batch_size"] for r in rows):
        print("* Captum ran out of memory with all grid points in one batch; timed with 32 rows per pass instead")
    print(TARGETS)
    if memory:
        print(f"\n{'network':12s} {'size':>4s} {'MB at N=8':>10s} {'MB at N=200':>11s} {'ratio':>6s} "
              f"{'<= ' + str(GROWTH_TARGET):>7s}")  # fmt: skip
        for m in memory:
            print(f"{m['network']:12s} {m['size']:4d} {m['mb_8']:10.1f} {m['mb_200']:11.1f} {m['ratio']:6.2f} "
                  f"{_verdict(m['passed']):>7s}")  # fmt: skip
    if batches:
        print(f"\n{'grid points/pass':>16s} {'MAC s':>8s} {'floor s':>8s} {'MAC/floor':>9s} {'MAC MB':>8s}")
        for b in batches:
            print(f"{str(b['steps_per_pass']):>16s} {b['mac_s']:8.2f} {b['floor_s']:8.2f} {b['ratio']:9.3f} "
                  f"{b['mac_mb']:8.1f}")  # fmt: skip


# the main table as Markdown tables narrow enough for a page: each group of columns beside the row's keys
KEY_COLUMNS = ("network", "L", "size", "N")
COLUMN_GROUPS = (
    ("Seconds per image", ("MAC s", "linear s", "floor s", "batched", "held s", "read s", "bulk s", "acc s")),
    ("Against Captum and the authors' loop", ("Captum s", "Capt GL s", "RAM ref s", "timed", "speed-up", "bound")),
    ("Ratios to the batched floor", ("MAC/batch", "held/bat", "read/bat", "bulk/bat", "acc/bat", "allow µs",
                                     "sp/bound", "time")),
    ("Memory", ("MAC MB", "batch MB", "held MB", "MB ratio", "MB bound", "mem")),
)  # fmt: skip


def markdown_tables(rows: List[Dict], memory: List[Dict], batches: List[Dict]) -> str:
    """The tables of ``print_tables`` in Markdown, the main one split into ``COLUMN_GROUPS`` (a column that some
    row lacks, as in files of older versions of this script, is left out)."""
    spec_and_value = {header: (spec, value) for header, spec, value in COLUMNS}

    def cell(r: Dict[str, Any], header: str) -> str:
        spec, value = spec_and_value[header]
        return format(value(r) if callable(value) else r[value], spec).strip()

    def present(header: str) -> bool:
        try:
            return all(cell(r, header) is not None for r in rows)
        except KeyError:
            return False

    def table(headers: Sequence[str], lines: List[List[str]]) -> List[str]:
        return ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers),
                *("| " + " | ".join(line) + " |" for line in lines), ""]  # fmt: skip

    out: List[str] = []
    for title, group in COLUMN_GROUPS:
        headers = [*KEY_COLUMNS, *(h for h in group if present(h))]
        out += [f"{title}:", "", *table(headers, [[cell(r, h) for h in headers] for r in rows])]
    out += [TARGETS[0].upper() + TARGETS[1:] + ".", ""]
    if any(r["captum_internal_batch_size"] for r in rows):
        out += ["`timed` with `*`: Captum ran out of memory with all grid points in one batch; timed with 32 rows "
                "per pass instead.", ""]  # fmt: skip
    if memory:
        out += [f"Memory against N (target: growth from N = 8 to N = 200 at most {GROWTH_TARGET}):", "",
                *table(("network", "size", "MB at N=8", "MB at N=200", "ratio", "verdict"),
                       [[m["network"], str(m["size"]), f"{m['mb_8']:.1f}", f"{m['mb_200']:.1f}", f"{m['ratio']:.2f}",
                         _verdict(m["passed"])] for m in memory])]  # fmt: skip
    if batches:
        out += ["Grid points per pass:", "",
                *table(("grid points/pass", "MAC s", "floor s", "MAC/floor", "MAC MB"),
                       [[str(b["steps_per_pass"]), f"{b['mac_s']:.2f}", f"{b['floor_s']:.2f}", f"{b['ratio']:.3f}",
                         f"{b['mac_mb']:.1f}"] for b in batches])]  # fmt: skip
    return "\n".join(out)


def paper_swinir(args: argparse.Namespace) -> Dict[str, Any]:
    """RAM's analysis network at the paper's size: MAC over all its layers for ``args.images`` images of
    64 × 64, N = 200, for several images per pass; its FLOPs per grid point, the time they imply at the
    GPU's peak rate, and the published loop extrapolated."""
    from torch.utils.flop_counter import FlopCounterMode

    from macattr.restoration.networks import SwinIRStyle

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = SwinIRStyle(dim=180, depths=(6,) * 6, heads=6, window=8).to(device).eval()
    forward = targets.gradient_magnitude(model)
    layers = list(macattr.candidate_layers(model).values())
    images = torch.rand(args.images, 3, 64, 64, device=device)
    n_steps = args.steps[0] if args.steps else 200
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16 and cuda)
    one = images[:1].clone().requires_grad_()
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # count the backward to the input, as the analysis runs it: no parameter gradients
    with FlopCounterMode(display=False) as counter, autocast:
        forward(one).sum().backward()
    for parameter, flag in zip(model.parameters(), flags):
        parameter.requires_grad_(flag)
    flops = counter.get_total_flops() * (n_steps + 1) * args.images
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None) if cuda and args.bf16 else None
    rows = []
    for per_pass in args.images_per_pass:
        with autocast:
            LayerMAC(forward, layers).attribute(images[:per_pass], n_steps=2, seed=0)  # warm-up
            _sync(args.device)
            started = time.perf_counter()
            for batch in images.split(per_pass):
                LayerMAC(forward, layers).attribute(batch, n_steps=n_steps, seed=0)
            _sync(args.device)
        seconds = time.perf_counter() - started
        rows.append(dict(images_per_pass=per_pass, seconds=seconds, tflops=flops / seconds / 1e12,
                         fraction_of_peak=None if peak is None else flops / seconds / peak))  # fmt: skip
    _sync(args.device)
    started = time.perf_counter()
    _ram_reference(forward, None, layers, images[:1], n_steps, REFERENCE_STEPS)
    _sync(args.device)
    reference = (time.perf_counter() - started) / REFERENCE_STEPS * (n_steps + 1) * args.images
    result = dict(device=name, layers=len(layers), images=args.images, n_steps=n_steps, bf16=args.bf16 and cuda,
                  flops_per_grid_point=counter.get_total_flops(), total_tflop=flops / 1e12,
                  lower_bound_s=None if peak is None else flops / peak, rows=rows,
                  ram_reference_s=reference)  # fmt: skip
    print(
        f"paper-size SwinIR: {len(layers)} layers, {args.images} images of 64 x 64, N = {n_steps}, {name}, "
        f"bf16={result['bf16']}"
    )
    print(f"FLOPs per grid point per image (forward + backward): {result['flops_per_grid_point'] / 1e9:.1f} GFLOP; "
          f"all: {result['total_tflop']:.1f} TFLOP" + ("" if peak is None else
          f"; at the peak {peak / 1e12:.0f} TFLOP/s: {result['lower_bound_s']:.2f} s"))  # fmt: skip
    print(f"{'images/pass':>11s} {'seconds':>8s} {'TFLOP/s':>8s} {'of peak':>8s}")
    for r in rows:
        share = "–" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f} %"
        print(f"{r['images_per_pass']:11d} {r['seconds']:8.2f} {r['tflops']:8.2f} {share:>8s}")
    print(
        f"RAM's published loop (fp32, one image and one grid point per pass), extrapolated from {REFERENCE_STEPS} "
        f"grid points: {reference:.0f} s"
    )
    return result


def scaling(folder: Path, threads: int) -> Dict[str, Any]:
    """Time of all-layer MAC (DnCNN-style, CPU) against layers, n_steps and image size; one PNG per curve."""
    from matplotlib.figure import Figure

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    build, _ = NETWORKS["dncnn"]
    model = build(True).eval()
    forward = targets.gradient_magnitude(model)
    layers = list(macattr.candidate_layers(model).values())

    def timed(n_layers: int, n_steps: int, size: int) -> float:
        x = torch.rand(1, 3, size, size)
        chosen = layers[:n_layers]
        LayerMAC(forward, chosen).attribute(x, n_steps=2, seed=0)
        best = math.inf
        for _ in range(2):
            started = time.perf_counter()
            LayerMAC(forward, chosen).attribute(x, n_steps=n_steps, seed=0)
            best = min(best, time.perf_counter() - started)
        return best

    curves = {
        "layers": ([1, 2, 4, 8, 12, len(layers)], lambda v: timed(v, 32, 32), "layers attributed in one sweep"),
        "n_steps": ([8, 16, 32, 64, 128, 200], lambda v: timed(len(layers), v, 32), "n_steps"),
        "size": ([16, 32, 48, 64, 96], lambda v: timed(len(layers), 32, v), "image side (pixels)"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (values, run, label) in curves.items():
        seconds = [run(v) for v in values]
        out[name] = dict(zip(map(str, values), seconds))
        figure = Figure(figsize=(5, 3.5), layout="constrained")
        ax = figure.add_subplot()
        ax.plot(values, seconds, "o-")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title(f"all-layer MAC time vs {name} (DnCNN-style, CPU)")
        figure.savefig(folder / f"scaling_{name}.png", dpi=110)
        print(f"scaling {name}: " + ", ".join(f"{v}: {s:.2f} s" for v, s in zip(values, seconds)))
    return out


# --allocator → (the library's name, the Debian package that installs it)
ALLOCATORS = {"jemalloc": ("jemalloc", "libjemalloc2"), "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4")}
# glibc's malloc keeping what it frees: no mmap for large blocks, no trimming of the heap's top
GLIBC_KEPT = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000", "LD_PRELOAD": ""}


def _allocator() -> str:
    """The C allocator of this process: the preloaded library, or glibc's malloc (with its MALLOC_* settings)."""
    preloaded = [Path(p).name for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()]
    tuned = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")]
    return " ".join(preloaded) or " ".join(["glibc malloc", *tuned])


def _allocator_environment(allocator: str) -> Dict[str, str]:
    """The environment variables that put this script's processes on ``allocator``."""
    if allocator == "glibc-kept":
        return GLIBC_KEPT
    import ctypes.util

    name, package = ALLOCATORS[allocator]
    library = ctypes.util.find_library(name)
    if library is None:
        raise SystemExit(f"bench_mac.py: error: --allocator {allocator}: lib{name} is not installed "
                         f"(Debian: apt install {package})")  # fmt: skip
    return {"LD_PRELOAD": library}


def _run_under(allocator: str, argv: List[str]) -> None:
    """Re-run this script on ``allocator`` (no return) unless it already runs there; every worker inherits it."""
    wanted = _allocator_environment(allocator)
    if any(os.environ.get(key, "") != value for key, value in wanted.items()):
        os.execve(sys.executable, [sys.executable, __file__, *argv], dict(os.environ, **wanted))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small networks and inputs, N = 32 (a few minutes)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="CUDA: run under bf16 autocast")
    parser.add_argument("--networks", help="default: dncnn,swinir-small,resnet18 (CPU); dncnn,swinir,resnet18 (CUDA)")
    parser.add_argument("--batch", type=int, default=1, help="images per attribution call")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions after the warm-up")
    parser.add_argument("--captum-layers", type=int, default=3, help="layers Captum is timed on (then extrapolated)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=lambda t: [int(v) for v in t.split(",")], help="n_steps list, e.g. 32,200")
    parser.add_argument("--scaling", help="folder for the scaling plots (skips the main table)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the n_steps = 8 vs 200 memory table")
    parser.add_argument("--paper-swinir", action="store_true", help="RAM's analysis network at the paper's size")
    parser.add_argument("--images", type=int, default=70, help="--paper-swinir: images of 64 x 64")
    parser.add_argument("--images-per-pass", type=lambda t: [int(v) for v in t.split(",")], default=[1, 7, 14],
                        help="--paper-swinir: images per attribution call, e.g. 1,7,14")  # fmt: skip
    parser.add_argument("--allocator", choices=["system", "glibc-kept", *ALLOCATORS], default="system",
                        help="CPU: run every method on this C allocator (jemalloc and tcmalloc preloaded; "
                        "glibc-kept: glibc's malloc keeping what it frees; glibc by default returns it and pays "
                        "page faults)")  # fmt: skip
    parser.add_argument("--fused-accumulation", action="store_true",
                        help="time mac, linear and accumulate with each layer's accumulation as one compiled "
                        "kernel (memory columns stay the plain engine's)")  # fmt: skip
    parser.add_argument("--markdown", metavar="JSON", help="run nothing: the tables of this results file (--json) "
                        "in Markdown, as the benchmarks page shows them")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.markdown:
        saved = json.loads(Path(args.markdown).read_text())
        print(markdown_tables(saved["rows"], saved.get("memory", []), saved.get("batch_sizes", [])))
        return 0
    if args.fused_accumulation and (args.scaling or args.paper_swinir):
        parser.error("--fused-accumulation: only for the main table, not with --scaling or --paper-swinir")
    if args.allocator != "system":
        _run_under(args.allocator, sys.argv[1:] if argv is None else argv)
    if args.worker:
        config = json.loads(args.worker)
        print(json.dumps((memory_worker if config["mode"] == "memory" else timing_worker)(config)), flush=True)
        os._exit(0)  # the result is out; skip interpreter teardown, which has aborted CUDA workers
    if args.scaling:
        results: Dict[str, Any] = {"scaling": scaling(Path(args.scaling), args.threads)}
    elif args.paper_swinir:
        results = {"paper_swinir": paper_swinir(args)}
    else:
        default = "dncnn,swinir,resnet18" if args.device.startswith("cuda") else "dncnn,swinir-small,resnet18"
        args.networks = [n.strip() for n in (args.networks or default).split(",") if n.strip()]
        unknown = set(args.networks) - set(NETWORKS)
        if unknown:
            parser.error(f"--networks: unknown {sorted(unknown)}; choose from {sorted(NETWORKS)}")
        rows = []
        for row in plan(args):
            rows.append(run_row(row, args))
            print("progress:", format_row(rows[-1]), flush=True)
        memory = [] if args.skip_memory else memory_rows(args)
        batches = batch_size_rows(args) if args.device.startswith("cuda") else []
        print_tables(rows, memory, batches)
        results = {"rows": rows, "memory": memory, "batch_sizes": batches}
    results["machine"] = dict(
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else os.uname().machine,
        threads=args.threads, torch=torch.__version__, quick=args.quick, bf16=args.bf16, allocator=_allocator(),
        fused_accumulation=args.fused_accumulation,
    )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
