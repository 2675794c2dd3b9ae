"""One sweep along a path for any set of layers.

For every grid point ``α_j`` the engine runs one forward pass with hooks on all
requested layers and one backward pass that takes ``∂F/∂y`` with respect to the
captured layer outputs only (never parameter ``.grad``). Several grid points may
share a pass (``steps_per_pass``); rows are then step-major, ``s * N + n``.

The per-layer results are accumulated while the backward pass runs: each
layer's gradient is added to its running sum
([`macattr.accumulators`][macattr.accumulators]) as soon as autograd produces
it, and then freed. Memory holds one pass plus, per layer, the running sum and
the previous grid point: it does not grow with ``n_steps``, and no pass holds
the gradients of all layers at once.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from macattr._checks import check_choice, check_int
from macattr.accumulators import CompletenessSum, ConductanceSum, GradientSum
from macattr.memory import PassMemory, PassMeter, accumulation_bytes
from macattr.paths import QUADRATURES, IntegrationPath, interval_of, rule_on
from macattr.segments import PolygonalPath, SegmentRule, aligned_grid, resolves_stretches
from macattr.targets import TargetIndex, expand_target, select_target
from macattr.vocabulary import RULES, SEGMENT_RULES

LayerTensors = Tuple[Tensor, ...]
QUANTITIES = ("conductance", "gradient")


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

    ``names`` label the layers in error messages (default: their class names).
    A layer whose captured tensor is later overwritten in place is re-run with
    its output cloned (see [`overwritten()`][macattr.engine.LayerRecorder.overwritten]). Use as a context manager: the
    hooks are removed on exit, also after an error.

    Gradient checkpointing (``torch.utils.checkpoint``) runs a layer's forward a second time during the
    backward pass. While ``recomputing`` is set (the engine sets it for its backward pass) that second run is
    not a second call: it is ignored, except for a layer first captured without autograd (inside a reentrant
    checkpoint, whose forward runs under ``torch.no_grad()``): its recomputed tensors, which autograd
    differentiates, go to ``on_recompute(index, tensors)``.

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
        >>> with LayerRecorder([model[0]], to_layer_input=False, names=["0"]) as recorder:
        ...     _ = model(torch.rand(4, 2))
        ...     [tuple(t.shape) for t in recorder.captured[0]]
        [(4, 3)]
    """

    def __init__(self, layers: Sequence[nn.Module], to_layer_input: bool, names: Optional[Sequence[str]] = None):
        self.layers = list(layers)
        self.names = list(names) if names is not None else [type(m).__name__ for m in self.layers]
        self.to_layer_input = to_layer_input
        self.clone = [False] * len(self.layers)
        self.captured: List[Optional[LayerTensors]] = [None] * len(self.layers)
        self.without_autograd: List[bool] = [False] * len(self.layers)
        self.recomputing = False
        self.on_recompute: Optional[Callable[[int, LayerTensors], None]] = None
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
        self.clear()

    def clear(self) -> None:
        """Forget what the last forward pass captured."""
        self.captured = [None] * len(self.layers)
        self.without_autograd = [False] * len(self.layers)

    def _capture(self, index: int, value: object) -> object:
        if self.recomputing:  # gradient checkpointing runs the layer again in the backward pass
            if self.without_autograd[index] and self.on_recompute is not None:
                self.on_recompute(index, _floating_tensors(value))
            return None
        if self.captured[index] is not None:
            raise ValueError(
                f"layer {self.names[index]!r} runs more than once in one forward pass; the attribution of a "
                "module shared between calls is not defined: pass a module that runs once"
            )
        tensors = _floating_tensors(value)
        if not tensors:
            where = "input" if self.to_layer_input else "output"
            raise ValueError(f"layer {self.names[index]!r} has no floating-point {where} tensor to attribute to")
        self.captured[index] = tensors
        self.without_autograd[index] = not torch.is_grad_enabled()
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


def _forward(recorder: LayerRecorder, run: Callable[[], Any]) -> Any:
    """``run()`` with the hooks capturing; re-run once with clones if a captured tensor was changed in place."""
    for attempt in range(2):
        recorder.clear()
        scores = run()
        missing = [recorder.names[i] for i, c in enumerate(recorder.captured) if c is None]
        if missing:
            raise ValueError(f"layer {missing} did not run during the forward pass; is it part of the model?")
        overwritten = recorder.overwritten()
        if not overwritten:
            return scores
        if attempt == 1:
            raise RuntimeError(
                f"the captured tensors of layer {[recorder.names[i] for i in overwritten]} are modified in place "
                "by the model even when cloned (they alias another tensor); make the in-place operation out of place"
            )
        for index in overwritten:
            recorder.clone[index] = True
    raise AssertionError("unreachable")


def _roots(tensors: Sequence[Tensor]) -> List[Tensor]:
    """The tensors that no other one of ``tensors`` feeds: a backward pass that reaches them passes every other.

    One walk over the autograd graph below the tensors, remembering for each node whether one of the
    tensors' nodes lies under it.
    """
    captured = {t.grad_fn for t in tensors if t.grad_fn is not None}
    below: Dict[Any, bool] = {}  # node → one of the captured nodes lies strictly under it
    for start in captured:
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in below:
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            if expanded:
                below[node] = any(child in captured or below[child] for child in children)
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in children if child not in below)
    # a tensor without a node (an input leaf, a bare parameter) has nothing under it: a root
    return list({id(t): t for t in tensors if t.grad_fn is None or not below[t.grad_fn]}.values())


def _backward_into(recorder: LayerRecorder, scores: Tensor, consume: Callable[[int, int, Tensor], None],
                   inputs: LayerTensors = ()) -> None:  # fmt: skip
    """Backward from ``Σ F`` that hands ``∂F/∂y`` of every captured tensor ``j`` of layer ``i`` to
    ``consume(i, j, grad)`` as soon as autograd has it, and stops at the earliest captured tensors.

    ``inputs``: leaves the backward pass must reach too (the path's points, for the certificate); their
    gradients go to ``consume(L, j, grad)`` with ``L`` the number of layers. Each gradient is used while it is
    fresh and then freed, so no pass holds the gradients of all layers; parameters get no gradient. A tensor
    ``F`` does not depend on is handed zeros.
    """
    if not scores.requires_grad:
        raise ValueError(
            "the forward function's output does not depend on its inputs through autograd "
            "(does it run under torch.no_grad() or detach its output?)"
        )
    tracked = [(i, j, t) for i, tensors in enumerate([*recorder.captured, inputs]) for j, t in enumerate(tensors)]
    waiting = {(i, j): t for i, j, t in tracked}

    def hook_for(i: int, j: int) -> Callable[[Tensor], None]:
        def hook(grad: Optional[Tensor]) -> None:
            if grad is None:  # seen when a plain function runs a torch.compile'd model: its graphs trace the hooks
                raise ValueError(
                    f"autograd handed layer {recorder.names[i]!r} no gradient tensor; if the forward function runs "
                    "a torch.compile'd model, pass the compiled module itself or a macattr.targets wrapper of it "
                    "(macattr then attributes its original module), or the original module model._orig_mod"
                )
            if waiting.pop((i, j), None) is not None:
                consume(i, j, grad)

        return hook

    def recomputed(i: int, tensors: LayerTensors) -> None:  # a reentrant checkpoint's second run of layer i
        handles.extend(t.register_hook(hook_for(i, j)) for j, t in enumerate(tensors) if t.requires_grad)

    handles = [t.register_hook(hook_for(i, j)) for i, j, t in tracked if t.requires_grad]
    recorder.recomputing, recorder.on_recompute = True, recomputed
    try:
        with torch.enable_grad():
            if _has_reentrant_checkpoint(scores):  # it refuses autograd.grad: a full backward, parameters included
                torch.autograd.backward(scores.sum())
            else:
                roots = _roots([t for _, _, t in tracked if t.requires_grad])
                if roots:
                    torch.autograd.grad(scores.sum(), roots, allow_unused=True)
    finally:
        recorder.recomputing, recorder.on_recompute = False, None
        for handle in handles:
            handle.remove()
    unreached = sorted(
        {recorder.names[i] for i, _ in waiting if i < len(recorder.layers) and recorder.without_autograd[i]}
    )
    if unreached:
        raise ValueError(
            f"layer {unreached} ran without autograd (under torch.no_grad() in the model's forward, or inside a "
            "reentrant torch.utils.checkpoint whose inputs do not require grad), so its gradient cannot be taken; "
            "run it with autograd, or call the checkpoint with use_reentrant=False (Hugging Face: "
            "model.activation_checkpointing_enable(activation_checkpointing_kwargs={'use_reentrant': False}), "
            "gradient_checkpointing_enable(gradient_checkpointing_kwargs=...) before transformers 5, or "
            "model.activation_checkpointing_disable())"
        )
    for (i, j), t in list(waiting.items()):
        consume(i, j, torch.zeros_like(t))


def _has_reentrant_checkpoint(scores: Tensor) -> bool:
    """Whether the graph below ``scores`` holds a reentrant ``torch.utils.checkpoint`` (its backward node)."""
    seen, stack = set(), [scores.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if type(node).__name__ == "CheckpointFunctionBackward":
            return True
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return False


def _split_steps(tensor: Tensor, steps: int, rows: int, name: str) -> Tensor:
    """(steps · rows, ...) → (steps, rows, ...); ``rows`` is what one grid point gives this tensor (N, or N · k)."""
    if tensor.dim() == 0 or tensor.shape[0] != steps * rows:
        raise ValueError(
            f"layer {name!r} has a tensor of shape {tuple(tensor.shape)} whose first dimension is not the batch "
            f"({rows} rows per grid point, {steps} grid points in this pass); attribution needs layer tensors of "
            "shape (N, ...) or (N · k, ...), batch first"
        )
    return tensor.reshape(steps, rows, *tensor.shape[1:])


@dataclass
class SweepResult:
    """attributions: per layer, per tensor, (N, ...).

    start_outputs, end_outputs: ``F`` (N,) at the ends of the path's interval
    (``None`` when they were not asked for and the grid does not reach them).

    With a certified plan (``SweepPlan(certify=True)``): errors, per layer, per tensor, (N, ...), each
    attribution's estimated absolute error (``ConductanceSum.error_estimate``); input_sums (N,), the
    conductance at the input summed over its elements, and input_scales (N,), the size of its steps (see
    [`CompletenessSum`][macattr.accumulators.CompletenessSum]).

    Examples:
        >>> part = SweepResult([(torch.ones(1, 2),)], None, None)
        >>> SweepResult.concatenate([part, part]).attributions[0][0].shape
        torch.Size([2, 2])
    """

    attributions: List[LayerTensors]
    start_outputs: Optional[Tensor]
    end_outputs: Optional[Tensor]
    errors: Optional[List[LayerTensors]] = None
    input_sums: Optional[Tensor] = None
    input_scales: Optional[Tensor] = None

    @staticmethod
    def concatenate(parts: Sequence[SweepResult]) -> SweepResult:
        """The results of sweeps over consecutive groups of samples, as one result over all of them."""
        if not parts:
            raise ValueError("concatenate needs at least one SweepResult")
        if len(parts) == 1:
            return parts[0]

        def joined(per_layer: Sequence[List[LayerTensors]]) -> List[LayerTensors]:
            return [tuple(torch.cat(pieces) for pieces in zip(*layer)) for layer in zip(*per_layer)]

        def cat(side: str) -> Optional[Tensor]:
            return None if getattr(parts[0], side) is None else torch.cat([getattr(p, side) for p in parts])

        errors = None if parts[0].errors is None else joined([p.errors for p in parts])
        return SweepResult(joined([p.attributions for p in parts]), cat("start_outputs"), cat("end_outputs"), errors,
                           cat("input_sums"), cat("input_scales"))  # fmt: skip


_CPU_PASS_BYTES = 128 * 2**20
_CPU_MAX_STEPS = 8
_CUDA_MAX_STEPS = 64
_CUDA_SHARE = 0.25


@dataclass(frozen=True)
class PassPlanning:
    """What a caller asks of every sweep that runs inside ``planning_passes``: ``agree(steps)`` → the grid points
    per pass to use instead (the processes of a sharded model, which must run the same passes, take the fewest
    any of them chose); ``report(memory, steps)`` hears each sweep's measured
    [`PassMemory`][macattr.memory.PassMemory] and grid points per pass."""

    agree: Optional[Callable[[int], int]] = None
    report: Optional[Callable[[PassMemory, int], None]] = None


_PLANNING: ContextVar[PassPlanning] = ContextVar("pass_planning", default=PassPlanning())  # noqa: B039 (frozen)


@contextlib.contextmanager
def planning_passes(agree: Optional[Callable[[int], int]] = None,
                    report: Optional[Callable[[PassMemory, int], None]] = None) -> Iterator[None]:  # fmt: skip
    """Within the block, every sweep passes its grid points per pass through ``agree`` and its pass memory to
    ``report`` (an enclosing block's ones stay where these are ``None``).

    Examples:
        >>> from macattr.paths import LinearPath
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> heard = []
        >>> with planning_passes(report=lambda memory, steps: heard.append((memory.images, steps))):
        ...     _ = sweep(model, [model[0]], (torch.rand(2, 3),), (torch.zeros(2, 3),), LinearPath(),
        ...               SweepPlan(n_steps=20), target=0)
        >>> heard  # 2 images, the CPU's cap of 8 grid points per pass
        [(2, 8)]
    """
    for name, value in (("agree", agree), ("report", report)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a function or None, got {type(value).__name__}")
    outer = _PLANNING.get()
    token = _PLANNING.set(PassPlanning(agree or outer.agree, report or outer.report))
    try:
        yield
    finally:
        _PLANNING.reset(token)


def automatic_steps_per_pass(memory: PassMemory, device: torch.device) -> int:
    """Grid points per pass when ``internal_batch_size`` is not given, from the first pass's measured memory.

    Batching grid points amortises the per-pass cost of small networks; for large activations it gains little
    on CPU and costs page faults. On CPU a pass holds at most 128 MiB of activations and at most 8 grid points,
    so memory does not grow with ``n_steps`` from n_steps = 8 on. On CUDA a pass's activations take at most a
    quarter of the memory still available (free, or cached by PyTorch and unused; the running sums are made
    by then), and at most 64 grid points.

    Examples:
        >>> from macattr.memory import PassMemory
        >>> automatic_steps_per_pass(PassMemory(4, 2**20, 0), torch.device("cpu"))  # 1 MiB per grid point: 8
        8
        >>> automatic_steps_per_pass(PassMemory(4, 48 * 2**20, 0), torch.device("cpu"))  # 128 MiB // 48 MiB
        2
    """
    if device.type != "cuda":
        return memory.steps_within(_CPU_PASS_BYTES, _CPU_MAX_STEPS)
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return memory.steps_within(int(_CUDA_SHARE * (free + cached)), _CUDA_MAX_STEPS)


@dataclass(frozen=True)
class SweepPlan:
    """How to integrate: ``quantity`` "conductance" (``Σ ĝ · Δy``) or "gradient" (``Σ g · w``), Captum's
    ``method`` (the grid), ``n_steps`` intervals.

    ``steps_per_pass``: grid points per forward/backward (``None``: automatic). ``rule``: conductance's step
    rule, "left", "right" or "trapezoid" (see [`ConductanceSum`][macattr.accumulators.ConductanceSum]), or a
    segment rule ``gauss<m>`` (see [`macattr.segments`][macattr.segments]): ``n_steps`` straight segments
    between the path's equidistant points, m Gauss–Legendre nodes in each, ``n_steps (m + 1) + 1`` points in
    all; it places its own points, so ``method`` keeps its default.
    ``accumulator``: a function of no arguments making the running sum of one layer tensor (an
    [`Accumulator`][macattr.accumulators.Accumulator] fed ``update(values, grads, weights)`` pass by pass);
    default ``ConductanceSum(rule)`` or ``GradientSum()``. ``certify`` (conductance only): also estimate each
    attribution's error from the spread of the step rules and take the conductance at the input (the backward
    pass then reaches the input), see [`SweepResult`][macattr.engine.SweepResult].

    Examples:
        >>> from macattr.paths import LinearPath
        >>> plan = SweepPlan(n_steps=4, quantity="gradient", method="riemann_left")
        >>> alphas, weights = plan.alphas_and_weights(LinearPath())
        >>> alphas.tolist(), weights.tolist()
        ([0.0, 0.25, 0.5, 0.75], [0.25, 0.25, 0.25, 0.25])
    """

    n_steps: int
    quantity: str = "conductance"
    method: str = "riemann_trapezoid"
    steps_per_pass: Optional[int] = None
    to_layer_input: bool = False
    rule: str = "left"
    accumulator: Optional[Callable[[], Any]] = None
    certify: bool = False

    def __post_init__(self) -> None:
        check_int("n_steps", self.n_steps, 1)
        check_choice("quantity", self.quantity, QUANTITIES)
        check_choice("rule", self.rule, RULES)
        check_choice("method", self.method, QUADRATURES)
        if self.segment_rule is not None and self.method != "riemann_trapezoid":
            raise ValueError(
                f"rule={self.rule!r} places its own points along each segment; method= chooses the "
                f"points of the step rules only (got method={self.method!r})"
            )
        if self.accumulator is not None and not callable(self.accumulator):
            raise TypeError(f"accumulator must make an Accumulator when called, got {type(self.accumulator).__name__}")
        if self.steps_per_pass is not None:
            check_int("steps_per_pass", self.steps_per_pass, 1)
        if not isinstance(self.to_layer_input, bool):
            raise TypeError(f"to_layer_input must be True or False, got {self.to_layer_input!r}")
        if not isinstance(self.certify, bool):
            raise TypeError(f"certify must be True or False, got {self.certify!r}")
        if self.certify and (self.quantity != "conductance" or self.accumulator is not None):
            raise ValueError("certify=True estimates the error of conductance's own step sums: it needs "
                             "quantity='conductance' and no custom accumulator")  # fmt: skip

    @property
    def segment_rule(self) -> Optional[SegmentRule]:
        """The segment rule of a conductance sum that integrates inside each step, else ``None``."""
        if self.quantity != "conductance" or self.rule not in SEGMENT_RULES:
            return None
        return SegmentRule.named(self.rule)

    def integration_path(self, path: IntegrationPath) -> IntegrationPath:
        """The path the points lie on: ``path``, or for a segment rule the polygon through its grid points."""
        return path if self.segment_rule is None else PolygonalPath(path, self.n_steps)

    def alphas_and_weights(self, path: IntegrationPath,
                           inputs: Optional[Tuple[Tensor, ...]] = None) -> Tuple[Tensor, Tensor]:  # fmt: skip
        """Conductance: the ``n_steps + 1`` grid points (a segment rule: its ``n_steps (m + 1) + 1`` points, with
        weights that the sums do not use, on the segments that ``PolygonalPath.breaks(inputs)`` gives); gradient:
        ``n_steps`` points and their weights (float64)."""
        rule = self.segment_rule
        if rule is not None:
            alphas = rule.alphas(PolygonalPath(path, self.n_steps).breaks(inputs))
            return alphas, torch.zeros_like(alphas)
        if self.quantity == "conductance" and self.method == "riemann_trapezoid":  # its grid may meet the corners
            alphas = aligned_grid(path, self.n_steps, inputs)
            return alphas, torch.zeros_like(alphas)
        return rule_on(path, self.method, self.n_steps + (self.quantity == "conductance"))

    @property
    def sum_copies(self) -> int:
        """Tensors the size of one grid point of a layer's output that its running sum keeps: the conductance
        sum, its last grid point's value and gradient (a segment rule: the values and gradients of a segment's
        m + 2 points), and the certificate's two spreads; the gradient sum; a custom accumulator counted as
        one."""
        if self.quantity != "conductance" or self.accumulator is not None:
            return 1
        rule = self.segment_rule
        kept = 3 if rule is None else 1 + 2 * (rule.nodes + 2)
        return kept + 2 * self.certify

    @property
    def step_copies(self) -> int:
        """Tensors the size of one grid point of a layer's output that adding it to the sums holds for a moment:
        the incoming gradient, the step's change of value, the difference of the rules and the trapezoid's mean
        gradient for conductance (a segment rule: its nodes' value changes and the check's m + 2 terms); the
        gradient and its weighted copy for the gradient sum."""
        if self.quantity != "conductance":
            return 2
        rule = self.segment_rule
        return 4 if rule is None else max(4, 2 * rule.nodes + 3)

    def new_sum(self, on_path: bool = False, unresolved: bool = False) -> Any:
        """The running sum of one layer tensor; ``on_path``: a segment rule's segments are the path's own;
        ``unresolved``: the grid does not resolve the path's straight stretches (see
        [`ConductanceSum`][macattr.accumulators.ConductanceSum])."""
        if self.accumulator is not None:
            return self.accumulator()
        if self.quantity != "conductance":
            return GradientSum()
        return ConductanceSum(self.rule, spread=self.certify, on_path=on_path, unresolved=unresolved)


def _evaluate(
    forward_func: Callable[..., Tensor], points: Tuple[Tensor, ...], target: TargetIndex,
    additional_forward_args: tuple, n_samples: int, track: bool = True,
) -> Tuple[Tensor, LayerTensors]:  # fmt: skip
    """``F`` (R,) at the stacked points (R = steps · N rows), and the points as the model saw them;
    ``track``: with autograd, from fresh leaves."""
    steps = points[0].shape[0] // n_samples
    with torch.set_grad_enabled(track):
        inputs = tuple(p.detach().requires_grad_(track) for p in points)
        output = forward_func(*inputs, *_expand_args(additional_forward_args, n_samples, steps))
        return select_target(output, expand_target(target, n_samples, steps)), inputs


def sweep(
    forward_func: Callable[..., Tensor],
    layers: Sequence[nn.Module],
    inputs: Tuple[Tensor, ...],
    baselines: Tuple[Tensor, ...],
    path: IntegrationPath,
    plan: SweepPlan,
    *,
    target: TargetIndex = None,
    additional_forward_args: tuple = (),
    names: Optional[Sequence[str]] = None,
    outputs_at_ends: bool = False,
) -> SweepResult:
    """Attribute ``F = forward_func(X)`` to every layer in ``layers`` in one sweep along ``path``.

    inputs, baselines: tuples of tensors (N, ...) (baselines broadcast to inputs).
    names: layer names for error messages. outputs_at_ends: also evaluate ``F``
    at the ends of the path when the grid does not reach them.

    Examples:
        >>> from macattr.paths import LinearPath
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> x = torch.rand(2, 3)
        >>> result = sweep(model, [model[0], model[2]], (x,), (torch.zeros(2, 3),), LinearPath(), SweepPlan(n_steps=20),
        ...                target=0, outputs_at_ends=True)
        >>> [tuple(t[0].shape) for t in result.attributions]
        [(2, 4), (2, 1)]
        >>> change = result.end_outputs - result.start_outputs  # completeness at the last layer
        >>> bool(torch.allclose(result.attributions[1][0].sum(1), change, atol=1e-5))
        True
    """
    alphas, weights = plan.alphas_and_weights(path, inputs)
    n_samples = inputs[0].shape[0]
    along = plan.integration_path(path)
    points_at = along.bind(inputs, baselines)
    on_path = isinstance(along, PolygonalPath) and along.is_path(inputs)
    ends = along.breaks(inputs) if isinstance(along, PolygonalPath) else alphas
    per_step = 1 if plan.segment_rule is None else plan.segment_rule.points_per_segment
    unresolved = plan.quantity == "conductance" and not resolves_stretches(path, ends, inputs, per_step)
    sums: List[List] = []
    rows: List[List[int]] = []
    outputs: List[Tensor] = []
    at_input: List = []  # the certificate's sums at the input, one per input tensor

    layer_sizes: List[List[int]] = []  # bytes of one grid point of each recorded tensor, counted at the first pass

    def run(chunk: slice, recorder: LayerRecorder, meter: Optional[PassMeter] = None) -> None:
        steps = len(alphas[chunk])
        points = points_at(alphas[chunk])
        scores, leaves = _forward(
            recorder, lambda: _evaluate(forward_func, points, target, additional_forward_args, n_samples)
        )
        if meter is not None:
            captured = [t for tensors in recorder.captured for t in tensors]
            meter.hold([*captured, *leaves])
            layer_sizes.append(accumulation_bytes(captured, steps))
        leaves = leaves if plan.certify else ()
        if not sums:  # the first pass fixes each tensor's rows per grid point, checked on every later pass
            sums.extend([plan.new_sum(on_path, unresolved) for _ in tensors] for tensors in recorder.captured)
            rows.extend([t.shape[0] // steps if t.dim() else 0 for t in tensors] for tensors in recorder.captured)
            if plan.certify:
                at_input.extend(CompletenessSum(plan.rule) for _ in leaves)
                sums.append(at_input)
                rows.append([n_samples] * len(leaves))
        values = [list(tensors) for tensors in [*recorder.captured, leaves]]
        pass_weights, device_type = weights[chunk], scores.device.type
        under_autocast = torch.is_autocast_enabled(device_type)

        def consume(i: int, j: int, grad: Tensor) -> None:
            value, values[i][j] = values[i][j].detach(), None  # the pass keeps no reference once it is summed
            name = recorder.names[i] if i < len(recorder.names) else "(input)"
            split = [_split_steps(t, steps, rows[i][j], name) for t in (value, grad)]
            # sums stay in full precision; entering autocast costs time, so only when it is on
            with torch.autocast(device_type, enabled=False) if under_autocast else contextlib.nullcontext():
                sums[i][j].update(*split, pass_weights)

        _backward_into(recorder, scores, consume, leaves)
        recorder.clear()
        outputs.append(scores.detach().reshape(steps, n_samples))

    with LayerRecorder(layers, plan.to_layer_input, names) as recorder:
        planning = _PLANNING.get()
        given = plan.steps_per_pass
        start = 1 if given is None else given  # the first pass: one grid point to measure, or as given
        with PassMeter() as meter:
            run(slice(0, start), recorder, meter)
        sizes = layer_sizes[0]
        memory = meter.memory(min(start, len(alphas)), n_samples, plan.sum_copies * sum(sizes),
                              plan.step_copies * max(sizes, default=0))  # fmt: skip
        steps_per_pass = automatic_steps_per_pass(memory, inputs[0].device) if given is None else given
        if planning.agree is not None:
            steps_per_pass = planning.agree(steps_per_pass)
        if planning.report is not None:
            planning.report(memory, steps_per_pass)
        for first in range(start, len(alphas), steps_per_pass):
            run(slice(first, first + steps_per_pass), recorder)
    layer_sums = sums[: len(layers)]
    attributions = [tuple(acc.compute() for acc in tensors) for tensors in layer_sums]
    certificate: Dict[str, Any] = {}
    if plan.certify:
        certificate = {"errors": [tuple(acc.error_estimate() for acc in tensors) for tensors in layer_sums],
                       "input_sums": sum(acc.compute() for acc in at_input),
                       "input_scales": sum(acc.scale for acc in at_input)}  # fmt: skip
    if not (outputs_at_ends or plan.certify):
        return SweepResult(attributions, None, None)
    at_grid = torch.cat(outputs)
    start, end = interval_of(path)
    if float(alphas[0]) == start and float(alphas[-1]) == end:
        return SweepResult(attributions, at_grid[0], at_grid[-1], **certificate)
    points = points_at(torch.tensor([start, end], dtype=torch.float64))
    ends, _ = _evaluate(forward_func, points, target, additional_forward_args, n_samples, track=False)
    return SweepResult(attributions, *ends.reshape(2, n_samples), **certificate)


__all__ = [
    "LayerRecorder",
    "SweepPlan",
    "SweepResult",
    "PassPlanning",
    "automatic_steps_per_pass",
    "planning_passes",
    "sweep",
]
