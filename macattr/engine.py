"""One sweep along a path for any set of layers.

For every grid point ``α_j`` the engine runs one forward pass with hooks on all
requested layers and one backward pass that takes ``∂F/∂y`` with respect to the
captured layer outputs only (never parameter ``.grad``). Several grid points may
share a pass (``steps_per_pass``); rows are then step-major, ``s * N + n``.

The per-layer results are accumulated as the sweep goes (torchmetrics style,
``update()`` then ``compute()``), so memory holds one pass plus, per layer, the
running sum and the previous grid point — it does not grow with ``n_steps``.
Those per-layer buffers are made once, at the first pass, so that later passes
reuse the memory freed around them instead of growing the heap.

- :class:`ConductanceSum`: ``Σ_j ∂F/∂y|_{α_j} · (y(α_{j+1}) − y(α_j))`` (Eq. 9).
- :class:`GradientSum`: ``Σ_j ∂F/∂y|_{α_j} · (α_{j+1} − α_j)`` (internal influence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from macattr.paths import Path, grid
from macattr.targets import TargetType, expand_target, select_target

LayerTensors = Tuple[Tensor, ...]


@dataclass
class StepBatch:
    """What one pass over ``S`` grid points yields for a batch of ``N`` samples.

    alphas: (S,) float64 grid points; weights: (S,) ``α_{j+1} − α_j`` (0 at the end);
    outputs: (S, N) values of ``F``; values, grads: per layer, per tensor, (S, N, ...).
    """

    alphas: Tensor
    weights: Tensor
    outputs: Tensor
    values: List[LayerTensors]
    grads: List[LayerTensors]


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class ConductanceSum:
    """Running ``Σ_j g_j · (y_{j+1} − y_j)`` over grid points fed in order.

    ``update(values, grads, weights)`` takes consecutive points (S, N, ...);
    ``compute()`` returns the sum (N, ...).
    """

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None
        self._last_value: Optional[Tensor] = None
        self._last_grad: Optional[Tensor] = None
        self._buffers: Tuple[Tensor, ...] = ()

    def update(self, values: Tensor, grads: Tensor, weights: Tensor) -> None:
        dtype = _accumulation_dtype(values.dtype)
        values, grads = values.to(dtype), grads.to(dtype)
        if self.total is None:
            # made once, at the first (smallest) pass, so that later passes reuse the memory freed around them
            self.total = torch.zeros_like(values[0])
            self._buffers = (torch.empty_like(values[0]), torch.empty_like(grads[0]))
        else:
            self.total.addcmul_(self._last_grad, values[0] - self._last_value)
        if len(values) == 1:  # kept as they are: one row, no copy
            self._last_value, self._last_grad = values[0], grads[0]
            return
        self.total.add_(torch.linalg.vecdot(grads[:-1], values.diff(dim=0), dim=0))
        # copied, so that the pass's (S, N, ...) tensors can be freed
        self._last_value, self._last_grad = self._buffers
        self._last_value.copy_(values[-1])
        self._last_grad.copy_(grads[-1])

    def compute(self) -> Tensor:
        return self.total


class GradientSum:
    """Running ``Σ_j g_j · w_j`` with ``w_j = α_{j+1} − α_j``; ``compute()`` → (N, ...)."""

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None

    def update(self, values: Tensor, grads: Tensor, weights: Tensor) -> None:
        dtype = _accumulation_dtype(grads.dtype)
        shape = (-1,) + (1,) * (grads.dim() - 1)
        part = (grads.to(dtype) * weights.to(device=grads.device, dtype=dtype).reshape(shape)).sum(0)
        self.total = part if self.total is None else self.total + part

    def compute(self) -> Tensor:
        return self.total


RULES = {"conductance": ConductanceSum, "gradient": GradientSum}


def _floating_tensors(value: object) -> LayerTensors:
    items = value if isinstance(value, (tuple, list)) else (value,)
    return tuple(t for t in items if isinstance(t, Tensor) and t.is_floating_point())


def _clone_floating(value: object) -> object:
    if isinstance(value, Tensor):
        return value.clone() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_clone_floating(v) for v in value)
    return value


class LayerRecorder:
    """Hooks that capture the outputs (or inputs) of ``layers`` during one forward pass.

    A layer whose captured tensor is later overwritten in place is re-run with
    its output cloned (see :meth:`overwritten`). Use as a context manager: the
    hooks are removed on exit, also after an error.
    """

    def __init__(self, layers: Sequence[nn.Module], to_layer_input: bool) -> None:
        self.layers = list(layers)
        self.to_layer_input = to_layer_input
        self.clone = [False] * len(self.layers)
        self.captured: List[Optional[LayerTensors]] = [None] * len(self.layers)
        self._versions: List[Tuple[int, ...]] = [()] * len(self.layers)
        self._handles: list = []

    def __enter__(self) -> LayerRecorder:
        try:
            for index, layer in enumerate(self.layers):
                if self.to_layer_input:
                    handle = layer.register_forward_pre_hook(self._pre_hook(index))
                else:
                    handle = layer.register_forward_hook(self._hook(index))
                self._handles.append(handle)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.captured = [None] * len(self.layers)

    def _capture(self, index: int, value: object) -> object:
        if self.captured[index] is not None:
            raise ValueError(
                f"layer {index} ({type(self.layers[index]).__name__}) runs more than once in one forward pass; "
                "the attribution of a module shared between calls is not defined: pass a module that runs once"
            )
        tensors = _floating_tensors(value)
        if not tensors:
            where = "input" if self.to_layer_input else "output"
            raise ValueError(
                f"layer {index} ({type(self.layers[index]).__name__}) has no floating-point {where} tensor "
                "to attribute to"
            )
        self.captured[index] = tensors
        self._versions[index] = tuple(t._version for t in tensors)
        return _clone_floating(value) if self.clone[index] else None

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            return self._capture(index, output)

        return hook

    def _pre_hook(self, index: int) -> Callable:
        def pre_hook(module: nn.Module, args: tuple) -> object:
            return self._capture(index, args)

        return pre_hook

    def begin(self) -> None:
        self.captured = [None] * len(self.layers)

    def overwritten(self) -> List[int]:
        """Indices of layers whose captured tensors were modified in place since capture."""
        return [
            index
            for index, tensors in enumerate(self.captured)
            if tensors is not None and tuple(t._version for t in tensors) != self._versions[index]
        ]


def _expand_args(args: tuple, n_samples: int, repeats: int) -> tuple:
    return tuple(
        torch.cat([a] * repeats) if isinstance(a, Tensor) and a.dim() and a.shape[0] == n_samples else a for a in args
    )


def _run_pass(
    recorder: LayerRecorder,
    forward_func: Callable[..., Tensor],
    points: Tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: tuple,
) -> Tuple[Tensor, List[LayerTensors], List[LayerTensors]]:
    """Forward and backward on ``points`` (R, ...): ``F`` (R,), layer values and ``∂F/∂y``."""
    for attempt in range(2):
        recorder.begin()
        with torch.enable_grad():
            inputs = tuple(p.detach().requires_grad_() for p in points)
            scores = select_target(forward_func(*inputs, *additional_forward_args), target)
        missing = [i for i, c in enumerate(recorder.captured) if c is None]
        if missing:
            names = ", ".join(f"{i} ({type(recorder.layers[i]).__name__})" for i in missing)
            raise ValueError(f"layer {names} did not run during the forward pass; is it part of the model?")
        overwritten = recorder.overwritten()
        if not overwritten:
            break
        if attempt == 1:
            raise RuntimeError(
                f"the captured tensors of layer {overwritten} are modified in place by the model even when "
                "cloned (they alias another tensor); make the in-place operation out of place"
            )
        for index in overwritten:
            recorder.clone[index] = True
    if not scores.requires_grad:
        raise ValueError(
            "the forward function's output does not depend on its inputs through autograd "
            "(does it run under torch.no_grad() or detach its output?)"
        )
    flat = [t for tensors in recorder.captured for t in tensors]
    needed = [t for t in flat if t.requires_grad]
    with torch.enable_grad():
        found = torch.autograd.grad(scores.sum(), needed, allow_unused=True) if needed else ()
    by_id = {id(t): g for t, g in zip(needed, found)}
    grads, values = [], []
    for tensors in recorder.captured:
        grads.append(tuple(_zero_if_none(by_id.get(id(t)), t) for t in tensors))
        values.append(tuple(t.detach() for t in tensors))
    return scores.detach(), values, grads


def _zero_if_none(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _split_steps(tensors: LayerTensors, steps: int) -> LayerTensors:
    out = []
    for t in tensors:
        if t.dim() == 0 or t.shape[0] % steps:
            raise ValueError(
                f"a layer tensor of shape {tuple(t.shape)} does not have the batch as its first dimension; "
                "attribution needs layer outputs of shape (N, ...)"
            )
        out.append(t.reshape(steps, -1, *t.shape[1:]))
    return tuple(out)


@dataclass
class SweepResult:
    """attributions: per layer, per tensor, (N, ...).

    start_outputs, end_outputs: ``F`` (N,) at the first and last grid points evaluated
    (the path's ends for the "conductance" rule).
    """

    attributions: List[LayerTensors]
    start_outputs: Tensor
    end_outputs: Tensor


def saved_activation_bytes(run: Callable[[], object]) -> int:
    """Bytes autograd saves for backward while ``run()`` runs, parameters (leaves that require grad) excluded."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if not (t.is_leaf and t.requires_grad):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


CPU_PASS_BYTES = 128 * 2**20
CPU_MAX_STEPS = 8
CUDA_MAX_STEPS = 64


def automatic_steps_per_pass(bytes_per_step: int, device: torch.device) -> int:
    """Grid points per pass when ``internal_batch_size`` is not given.

    ``bytes_per_step`` is what autograd saved for one grid point of the batch.
    Batching grid points amortises the per-pass cost of small networks; for
    large activations it gains little on CPU and costs page faults. On CPU a
    pass saves at most 128 MiB and holds at most 8 grid points, so memory does
    not grow with ``n_steps`` from n_steps = 8 on. On CUDA a pass takes at most
    a quarter of the free memory (counting the saved tensors three times for
    the backward pass's own buffers), and at most 64 grid points.
    """
    if bytes_per_step <= 0:
        return CPU_MAX_STEPS if device.type != "cuda" else CUDA_MAX_STEPS
    if device.type != "cuda":
        return max(1, min(CPU_MAX_STEPS, CPU_PASS_BYTES // bytes_per_step))
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(CUDA_MAX_STEPS, int(0.25 * free) // (3 * bytes_per_step)))


def sweep(
    forward_func: Callable[..., Tensor],
    layers: Sequence[nn.Module],
    inputs: Tuple[Tensor, ...],
    baselines: Tuple[Tensor, ...],
    path: Path,
    n_steps: int,
    *,
    rule: str = "conductance",
    target: TargetType = None,
    additional_forward_args: tuple = (),
    steps_per_pass: Optional[int] = None,
    to_layer_input: bool = False,
) -> SweepResult:
    """Attribute ``F = forward_func(X)`` to every layer in ``layers`` in one sweep along ``path``.

    inputs, baselines: tuples of tensors (N, ...) (baselines broadcast to inputs).
    rule: "conductance" (N + 1 points, Eq. 9) or "gradient" (the N left points, weighted by dα).
    steps_per_pass: grid points per forward/backward; ``None`` chooses automatically.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    alphas = grid(path, n_steps)
    weights = torch.cat([alphas.diff(), alphas.new_zeros(1)])
    if rule == "gradient":
        alphas, weights = alphas[:-1], weights[:-1]
    n_samples = inputs[0].shape[0]
    points_at = path.bind(inputs, baselines)
    sums: List[List] = []
    outputs: List[Tensor] = []

    def run(chunk: slice, recorder: LayerRecorder) -> None:
        steps = chunk.stop - chunk.start
        scores, values, grads = _run_pass(
            recorder,
            forward_func,
            points_at(alphas[chunk]),
            expand_target(target, n_samples, steps),
            _expand_args(additional_forward_args, n_samples, steps),
        )
        batch = StepBatch(
            alphas[chunk],
            weights[chunk],
            scores.reshape(steps, n_samples),
            [_split_steps(v, steps) for v in values],
            [_split_steps(g, steps) for g in grads],
        )
        if not sums:
            sums.extend([RULES[rule]() for _ in tensors] for tensors in batch.values)
        with torch.autocast(scores.device.type, enabled=False):  # sums stay in full precision
            for layer_sums, layer_values, layer_grads in zip(sums, batch.values, batch.grads):
                for acc, value, grad in zip(layer_sums, layer_values, layer_grads):
                    acc.update(value, grad, batch.weights)
        outputs.append(batch.outputs)

    with LayerRecorder(layers, to_layer_input) as recorder:
        start = 0
        if steps_per_pass is None:
            saved = saved_activation_bytes(lambda: run(slice(0, 1), recorder))
            steps_per_pass = automatic_steps_per_pass(saved, inputs[0].device)
            start = 1
        for first in range(start, len(alphas), steps_per_pass):
            run(slice(first, min(first + steps_per_pass, len(alphas))), recorder)

    all_outputs = torch.cat(outputs)
    return SweepResult(
        [tuple(acc.compute() for acc in layer_sums) for layer_sums in sums],
        all_outputs[0],
        all_outputs[-1],
    )
