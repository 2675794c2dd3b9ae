"""Variants of the all-layer MAC sweep that might be faster, timed against the plain call in one process.

    python benchmarks/bench_variants.py                     # CPU, a few minutes on one core
    python benchmarks/bench_variants.py --device cuda       # on a GPU (adds CUDA graphs through torch.compile)
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_variants.py --variants plain   # another version

Each variant runs ``LayerMAC`` over every candidate layer of the network (N = 32, one image, the
gradient-magnitude target) and is compared with the plain call on the same inputs: the table gives the best
time of ``--reps`` interleaved rounds after a warm-up round (the compile time is reported apart), and the
largest relative difference of the attributions to the plain call's (a variant that changes the result is
not a speed-up).

- ``plain``: the model as given;
- ``channels_last``: model and input in the channels-last memory format;
- ``compile``: the forward function wrapped in ``torch.compile`` (the layer hooks stay on the modules);
- ``compile_cudagraphs`` (CUDA only): ``torch.compile(mode="reduce-overhead")``, which records CUDA graphs;
- ``fused_accumulation``: the forward as given, and each layer's accumulation of a pass (difference, product,
  sum over the grid points, boundary term, copies of the last point) as one ``torch.compile``'d function, which
  inductor turns into one fused kernel per layer shape: ``FusedConductanceSum``, passed through the attribution
  classes' ``accumulator=`` argument.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

import macattr
from bench_networks import NETWORKS
from macattr import LayerMAC, targets
from macattr.accumulators import TensorSum, accumulation_dtype


def _variants(device: str) -> List[str]:
    names = ["plain", "channels_last", "compile", "fused_accumulation"]
    return names + ["compile_cudagraphs"] if device.startswith("cuda") else names


def _prepare(variant: str, model: torch.nn.Module, kind: str, x: torch.Tensor):
    """The forward function and input of ``variant``; the model itself is changed only in its memory format.

    Image networks are attributed with the gradient-magnitude target, classifiers with their class-0 logit
    (``target=0``).
    """
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward: Callable = targets.gradient_magnitude(model) if kind == "image" else model
    if variant == "compile":
        forward = torch.compile(forward, dynamic=False)
    if variant == "compile_cudagraphs":
        forward = torch.compile(forward, mode="reduce-overhead", dynamic=False)
    return forward, x


class FusedConductanceSum(TensorSum):
    """The left-rule conductance sum of ``macattr.accumulators.ConductanceSum`` (same ``update``/``compute``/
    ``merge``), with each pass's arithmetic (boundary term, differences, products, sum over the grid points,
    copies of the last point) in one ``torch.compile``'d function, which inductor turns into one fused kernel
    per layer shape. Given to the attribution classes as ``accumulator=FusedConductanceSum``."""

    def __init__(self) -> None:
        super().__init__()
        self._last: Tuple[torch.Tensor, ...] = ()

    def update(self, values: torch.Tensor, grads: torch.Tensor, weights: Optional[torch.Tensor] = None) -> None:
        dtype = accumulation_dtype(values.dtype)
        values, grads = values.to(dtype), grads.to(dtype)
        if self.total is None:  # a zero last gradient: no boundary term before the first grid point
            self.total = torch.zeros_like(values[0])
            self._last = (values[0].clone(), torch.zeros_like(grads[0]))
        _fused_step()(self.total, *self._last, values, grads)


def _step(total: torch.Tensor, last_value: torch.Tensor, last_grad: torch.Tensor, values: torch.Tensor,
          grads: torch.Tensor) -> None:  # fmt: skip
    total.add_(last_grad * (values[0] - last_value) + (values.diff(dim=0) * grads[:-1]).sum(0))
    last_value.copy_(values[-1])
    last_grad.copy_(grads[-1])


@functools.lru_cache(maxsize=1)
def _fused_step() -> Callable:
    """``_step`` compiled once per process (then once per layer shape and pass size). Raises dynamo's recompile
    limit for the process, so that each layer shape gets its own compilation instead of falling back to eager."""
    torch._dynamo.config.recompile_limit = 512
    return torch.compile(_step, dynamic=False)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(network: str, size: int, device: str, reps: int, variants: List[str]) -> List[Dict[str, object]]:
    build, kind = NETWORKS[network]
    torch.manual_seed(0)
    model = build(False).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    layers = list(macattr.candidate_layers(model).values())
    target = None if kind == "image" else 0

    def attribute(entry: Dict[str, object]) -> Tuple[torch.Tensor, ...]:
        mac = LayerMAC(entry["forward"], layers, accumulator=entry["accumulator"])
        result = mac.attribute(entry["inputs"], target=target, n_steps=32, seed=0, internal_batch_size=8)
        _sync(device)
        return result

    runs, rows = {}, []
    for variant in variants:
        forward, inputs = _prepare(variant, model, kind, x)
        accumulator = FusedConductanceSum if variant == "fused_accumulation" else None
        entry = dict(forward=forward, inputs=inputs, times=[], accumulator=accumulator)
        started = time.perf_counter()
        try:
            entry["result"] = attribute(entry)
        except Exception as error:  # a variant that cannot run is a finding, not a crash of the benchmark
            rows.append(dict(network=network, size=size, variant=variant, error=f"{type(error).__name__}: {error}"))
            continue
        runs[variant] = dict(entry, first_s=time.perf_counter() - started)
    for _ in range(reps + 1):  # the first round warms up and is not counted
        for entry in runs.values():
            started = time.perf_counter()
            attribute(entry)
            entry["times"].append(time.perf_counter() - started)
    plain = runs["plain"]
    for variant, entry in runs.items():
        difference = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                         for a, b in zip(entry["result"], plain["result"]))  # fmt: skip
        best = min(entry["times"][1:])
        rows.append(dict(network=network, size=size, variant=variant, best_s=best, first_s=entry["first_s"],
                         ratio=best / min(plain["times"][1:]), max_relative_difference=difference))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=["dncnn", "swinir-small", "resnet18"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--variants", nargs="+", help="a subset of the variants (plain is always run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, N = 32, 8 grid points per pass")
    print(f"{'network':12s} {'size':>4s} {'variant':20s} {'best s':>8s} {'/ plain':>8s} {'first s':>8s} "
          f"{'max rel diff':>12s}")  # fmt: skip
    for network in args.networks:
        size = 32 if network == "resnet18" else args.size
        variants = ["plain", *[v for v in args.variants or _variants(args.device) if v != "plain"]]
        for row in run(network, size, args.device, args.reps, variants):
            if "error" in row:
                print(f"{network:12s} {size:4d} {row['variant']:20s} failed: {row['error'][:90]}")
                continue
            print(f"{network:12s} {size:4d} {row['variant']:20s} {row['best_s']:8.3f} {row['ratio']:8.3f} "
                  f"{row['first_s']:8.2f} {row['max_relative_difference']:12.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
