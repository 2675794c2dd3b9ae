"""Captum-style layer attribution classes over the one-sweep engine.

- [`LayerPathConductance`][macattr.attribution.LayerPathConductance]: conductance along any path; along
  [`LinearPath`][macattr.paths.LinearPath] it equals Captum's ``LayerConductance``
  with the same ``method``.
- [`LayerMAC`][macattr.attribution.LayerMAC]: conductance along RAM's mask attribute path (Mask
  Attribute Conductance).
- [`LayerPathInternalInfluence`][macattr.attribution.LayerPathInternalInfluence]:
  ``Σ_j ∂F/∂y|_{α_j} w_j`` along any path; along the linear path it equals
  Captum's ``LayerInternalInfluence``.

``layer`` may be one module or a list of modules; a list gives a list of
attributions, all from one sweep. ``attribute`` takes Captum's arguments in
Captum's order; the path's own options are keyword-only. All three work inside
Captum's ``NoiseTunnel``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from macattr._checks import check_choice, check_finite, check_int, check_model_usable
from macattr._compiled import eager_forward
from macattr._state import model_of, modules_of, preserved_state
from macattr.engine import SweepPlan, SweepResult, sweep
from macattr.paths import QUADRATURES, IntegrationPath, LinearPath, MaskAttributionPath, interval_of
from macattr.targets import TargetIndex

Attribution = Union[Tensor, Tuple[Tensor, ...]]
Inputs = Union[Tensor, Tuple[Tensor, ...]]
Baselines = Union[None, float, Tensor, Tuple[Union[float, Tensor], ...]]


def _format_inputs(inputs: Inputs) -> Tuple[Tensor, ...]:
    """A tensor or tuple of tensors (N, ...) with one N, floating point and finite → tuple."""
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if not items or not all(isinstance(x, Tensor) for x in items):
        raise TypeError("inputs must be a tensor or a non-empty tuple of tensors")
    for index, x in enumerate(items):
        if not x.is_floating_point() or x.dim() == 0:
            raise TypeError(f"inputs[{index}] must be a floating-point tensor (N, ...), got {x.dtype} {tuple(x.shape)}")
        if x.is_meta:
            raise ValueError(f"inputs[{index}] is on the meta device, without values")
        check_finite(f"inputs[{index}]" if len(items) > 1 else "inputs", x)
    # a tensor made under torch.inference_mode() cannot enter autograd; an ordinary copy of it can
    items = tuple(x.clone() if x.is_inference() else x for x in items)
    if len({x.shape[0] for x in items}) != 1:
        raise ValueError(f"inputs must share the batch size N, got {[x.shape[0] for x in items]}")
    if items[0].shape[0] == 0:
        raise ValueError("inputs must hold at least one sample (N >= 1), got N = 0")
    return tuple(x.detach() for x in items)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (checked by hand: ``torch.broadcast_shapes`` imports
    sympy, 35 MB, on its first call)."""
    if len(shape) > len(target):
        return False
    return all(size in (1, wanted) for size, wanted in zip(reversed(shape), reversed(target)))


def _format_baselines(baselines: Baselines, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """``None`` (zeros for every input), a number (for every input), a tensor or a tuple, each broadcastable."""
    if baselines is None or (isinstance(baselines, numbers.Real) and not isinstance(baselines, bool)):
        baselines = (0.0 if baselines is None else baselines,) * len(inputs)
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"baselines must have one entry per input ({len(inputs)}), got {len(items)}")
    out = []
    for index, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, numbers.Real) and not isinstance(b, bool):
            b = torch.tensor(float(b))
        if not isinstance(b, Tensor):
            raise TypeError(f"baselines[{index}] must be a number or a tensor, got {type(b).__name__}")
        if not _broadcasts_to(b.shape, x.shape):
            raise ValueError(
                f"baselines[{index}] of shape {tuple(b.shape)} does not broadcast to the input shape {tuple(x.shape)}"
            )
        b = b.detach().to(device=x.device, dtype=x.dtype)
        check_finite(f"baselines[{index}]", b)
        out.append(b)
    return tuple(out)


def _format_layers(
    layer: Union[nn.Module, Sequence[nn.Module]], forward_func: Callable
) -> Tuple[List[nn.Module], List[str]]:
    """One module or a non-empty list of distinct modules, each inside the model behind ``forward_func``
    when that is known; with their names (qualified names in that model, class names otherwise)."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not layers or not all(isinstance(m, nn.Module) for m in layers):
        raise TypeError("layer must be an nn.Module or a non-empty list of nn.Modules")
    if len({id(m) for m in layers}) != len(layers):
        raise ValueError("layer lists the same module more than once")
    model = model_of(forward_func)
    if model is None:
        return layers, [type(m).__name__ for m in layers]
    names = {id(m): name or "(model)" for name, m in model.named_modules()}
    strangers = [type(m).__name__ for m in layers if id(m) not in names]
    if strangers:
        raise ValueError(f"layer {strangers} is not part of the model behind forward_func")
    return layers, [names[id(m)] for m in layers]


def _rows(value: Any, n_samples: int, rows: slice) -> Any:
    """``value`` restricted to the samples ``rows`` when it holds one entry per sample."""
    if isinstance(value, Tensor) and value.dim() and value.shape[0] == n_samples:
        return value[rows]
    if isinstance(value, list) and len(value) == n_samples:
        return value[rows]
    return value


class _Rows:
    """Rows ``rows`` of a path bound once to the whole batch ``inputs``, so that splitting samples keeps their
    points and their grid (the path's corners and straight stretches are the whole batch's)."""

    def __init__(self, path: IntegrationPath, points_at: Callable, inputs: Tuple[Tensor, ...], rows: slice) -> None:
        self.path, self.points_at, self.inputs, self.rows = path, points_at, inputs, rows
        self.n_samples = inputs[0].shape[0]

    def interval(self) -> Tuple[float, float]:
        return interval_of(self.path)

    def corners(self, inputs: Tuple[Tensor, ...]) -> Optional[Tensor]:
        corners = getattr(self.path, "corners", None)
        return corners(self.inputs) if callable(corners) else None

    def shared_corners(self) -> bool:
        shared = getattr(self.path, "shared_corners", None)
        return bool(shared()) if callable(shared) else True

    def straight_between(self, breaks: Tensor, inputs: Tuple[Tensor, ...]) -> bool:
        straight = getattr(self.path, "straight_between", None)
        return bool(straight(breaks, self.inputs)) if callable(straight) else False

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> Callable:
        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            return tuple(
                p.unflatten(0, (-1, self.n_samples))[:, self.rows].flatten(0, 1) for p in self.points_at(alphas)
            )

        return points


@dataclass(frozen=True)
class CertifiedAttribution:
    """Attributions with their own error estimate and the certificate of the step sum that made them.

    Attributes:
        attributions: what ``attribute`` returns: per layer a tensor (N, ...) (a tuple for layers with several
            output tensors), a list for a list of layers.
        errors: the same structure: each neuron's estimated absolute error against the integral along the path,
            from the steps' differences ``(g_{j+1} − g_j) · (y_{j+1} − y_j)`` between the right and left rules
            (for a segment rule, between the consecutive points of its segments); see
            [`ConductanceSum.error_estimate`][macattr.accumulators.ConductanceSum.error_estimate].
        change: ``F(X(end)) − F(X(start))`` (N,).
        input_sum: the conductance at the path's input, summed over its elements (N,): it tends to ``change``
            as the grid resolves the path, for every model.
        input_scale: ``Σ_j |Σ_elements ĝ_j · ΔX_j|`` (N,), the size of the input's step contributions.
        convergence_delta: per layer (a list for a list of layers), ``Σ attributions − change`` (N,), as Captum.

    The completeness gap at the input, [`input_gap`][macattr.attribution.CertifiedAttribution.input_gap], is a
    measured lower bound on how far the step sum is from the integral on each sample: a large gap proves that
    the grid does not resolve the path.
    """

    attributions: Any
    errors: Any
    change: Tensor
    input_sum: Tensor
    input_scale: Tensor
    convergence_delta: Any

    @property
    def input_gap(self) -> Tensor:
        """``|input_sum − change| / max(input_scale, |change|)`` per sample (N,), in [0, ∞): 0 when the step sum
        is complete at the input; normalised by a scale that does not vanish when ``F`` barely changes."""
        scale = torch.maximum(self.input_scale.abs(), self.change.abs()).clamp(min=torch.finfo(self.change.dtype).tiny)
        return (self.input_sum - self.change).abs() / scale


class LayerPathConductance(LayerAttribution, GradientAttribution):
    """Conductance of every neuron of one or more layers along a path.

    Args:
        forward_func: model or function returning one scalar per sample (N,) or,
            with ``target``, per-class scores (N, K, ...).
        layer: a module, or a list of modules attributed in one sweep.
        path: any [`IntegrationPath`][macattr.paths.IntegrationPath] (default [`LinearPath`][macattr.paths.LinearPath]).
        train_mode: run the model in the train/eval mode it is in. By default it
            runs in eval mode (BatchNorm uses its running statistics, dropout is
            off), so attributions are deterministic and no buffer changes; with
            ``train_mode=True`` the buffers it updates are put back afterwards,
            and each pass holds one grid point (BatchNorm's batch statistics
            would otherwise mix grid points). Either way every module's mode is
            restored.
        accumulator: for experiments with the arithmetic: a function of no arguments that makes the running
            sum of one layer tensor, an [`Accumulator`][macattr.accumulators.Accumulator] fed
            ``update(values, grads, weights)`` with each pass's (S, N, ...) values and gradients and its grid
            weights (S,); default ``ConductanceSum(rule)`` (``GradientSum()`` for internal influence). A
            subclass of [`TensorSum`][macattr.accumulators.TensorSum] writes only ``update``.

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> x = torch.rand(2, 3)
        >>> cond, delta = LayerPathConductance(model, model[2]).attribute(x, target=0, return_convergence_delta=True)
        >>> cond.shape, bool(delta.abs().max() < 1e-5)  # the last layer: completeness is exact
        (torch.Size([2, 1]), True)
    """

    quantity = "conductance"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Union[nn.Module, Sequence[nn.Module]],
        path: Optional[IntegrationPath] = None,
        *,
        train_mode: bool = False,
        accumulator: Optional[Callable[[], Any]] = None,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        forward_func = eager_forward(forward_func)  # a compiled model's layers run no hooks: its original's do
        layers, names = _format_layers(layer, forward_func)
        LayerAttribution.__init__(self, forward_func, layers if isinstance(layer, (list, tuple)) else layers[0])
        GradientAttribution.__init__(self, forward_func)
        if not isinstance(train_mode, bool):
            raise TypeError(f"train_mode must be True or False, got {train_mode!r}")
        if model_of(forward_func) is None:
            warnings.warn(
                "the model behind forward_func is unknown (a plain function): only the attributed layers and their "
                "sub-modules are put in eval mode and restored; pass the model, a bound method or a macattr.targets "
                "wrapper to cover the whole network",
                UserWarning,
                stacklevel=3,
            )
        if accumulator is not None and not callable(accumulator):
            raise TypeError(f"accumulator must make an Accumulator when called, got {type(accumulator).__name__}")
        self.layers, self.layer_names, self.train_mode, self.accumulator = layers, names, train_mode, accumulator
        self.path = LinearPath()
        self.path = self._path_or_own(path)

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        baselines: Baselines = None,
        target: TargetIndex = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_trapezoid",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        *,
        path: Optional[IntegrationPath] = None,
        rule: str = "left",
        certify: bool = False,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any], CertifiedAttribution]:
        """Attributions in the shape of each layer's output (or input), (N, ...).

        Args:
            inputs: a tensor (N, ...) or a tuple of them, floating point, finite.
            baselines: ``None`` (zeros), a number, a tensor broadcastable to the
                input, or a tuple of those (one per input).
            target: Captum's ``target``: ``None`` when ``forward_func`` returns one
                scalar per sample, else a class index, a tuple, or one per sample.
            additional_forward_args: passed after the inputs; tensors with N rows
                are repeated for every grid point of a pass.
            n_steps: N ≥ 1 intervals of the grid.
            method: Captum's approximation rule, one of ``riemann_trapezoid``
                (default: N + 1 equidistant points, both ends included),
                ``riemann_left``, ``riemann_right``, ``riemann_middle``,
                ``gausslegendre`` (Captum's default). Conductance sums
                ``∂F/∂y`` at each of the rule's N + 1 points times the change of
                ``y`` to the next point, as Captum does; rules other than the
                trapezoid do not reach both ends of the path.
            internal_batch_size: rows per forward pass. From N up, that many
                grid points share a pass (``internal_batch_size // N``); below N
                the samples are split into groups of that size (one grid point
                per pass). Default: automatic, memory independent of ``n_steps``.
            return_convergence_delta: also return, per sample,
                ``Σ attributions − (F(X(end)) − F(X(start)))`` at the ends of the path.
            attribute_to_layer_input: attribute to the layers' inputs instead.
            path: integrate along this path in this call instead of the constructor's.
            rule: which gradient each step ``α_j → α_{j+1}`` multiplies ``y(α_{j+1}) − y(α_j)`` by:
                ``"left"`` ``∂F/∂y|_{α_j}`` (Captum's and the paper's Eq. 9), ``"right"``
                ``∂F/∂y|_{α_{j+1}}`` (the RAM authors' code), ``"trapezoid"`` their mean (second order on
                a smooth path). All three take the same passes and memory. Or a segment rule
                (``"gauss2"``, ``"gauss3"``, ``"gauss4"``, ``"-graded"`` forms, see
                [`macattr.segments`][macattr.segments]): each of the ``n_steps`` steps is a straight segment
                integrated with m Gauss–Legendre nodes, ``n_steps (m + 1) + 1`` points in all; ``method`` then
                keeps its default.
            certify: return a [`CertifiedAttribution`][macattr.attribution.CertifiedAttribution]: the
                attributions with each neuron's estimated error and the completeness gap at the input (the
                backward pass then reaches the input: one more layer's gradient per pass).

        Returns:
            per layer a tensor (a tuple for layers with several output tensors);
            a list for a list of layers. With ``return_convergence_delta``, also
            the delta (N,) (a list for a list of layers). With ``certify``, a ``CertifiedAttribution``.
        """
        return self._attribute_along(
            self._path_or_own(path), inputs, baselines, target, additional_forward_args, n_steps, method,
            internal_batch_size, return_convergence_delta, attribute_to_layer_input, rule, certify,
        )  # fmt: skip

    def _path_or_own(self, path: Optional[IntegrationPath]) -> IntegrationPath:
        if path is None:
            return self.path
        if not callable(getattr(path, "bind", None)):
            raise TypeError(f"path must be a path object with interval() and bind(), got {type(path).__name__}")
        interval_of(path)
        return path

    def _attribute_along(
        self,
        path: IntegrationPath,
        inputs: Inputs,
        baselines: Baselines,
        target: TargetIndex,
        additional_forward_args: Any,
        n_steps: int,
        method: str,
        internal_batch_size: Optional[int],
        return_convergence_delta: bool,
        attribute_to_layer_input: bool,
        rule: str = "left",
        certify: bool = False,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any], CertifiedAttribution]:
        if return_convergence_delta and not self.has_convergence_delta():
            raise ValueError(f"return_convergence_delta is not available for {type(self).__name__}")
        check_choice("method", method, QUADRATURES)
        formatted = _format_inputs(inputs)
        bases = _format_baselines(baselines, formatted)
        n_samples = formatted[0].shape[0]
        # in train mode BatchNorm's batch statistics would mix grid points: one grid point per pass
        steps_per_pass, group = (1 if self.train_mode else None), n_samples
        if internal_batch_size is not None:
            check_int("internal_batch_size", internal_batch_size, 1)
            group = min(internal_batch_size, n_samples)
            steps_per_pass = 1 if self.train_mode else max(1, internal_batch_size // n_samples)
        for name, flag in (("return_convergence_delta", return_convergence_delta),
                           ("attribute_to_layer_input", attribute_to_layer_input), ("certify", certify)):  # fmt: skip
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if certify and self.accumulator is not None:
            raise ValueError("certify=True estimates the error of conductance's own step sums; it cannot be used "
                             "with a custom accumulator=")  # fmt: skip
        plan = SweepPlan(check_int("n_steps", n_steps, 1), self.quantity, method, steps_per_pass,
                         attribute_to_layer_input, rule, self.accumulator, certify)  # fmt: skip
        extra = additional_forward_args
        extra = () if extra is None else extra if isinstance(extra, tuple) else (extra,)
        points_at = path.bind(formatted, bases) if group < n_samples else None
        parts = []
        layer_modules = [m for layer in self.layers for m in layer.modules()]
        owner = model_of(self.forward_func)
        layers_named = (layer.named_modules(prefix=name) for name, layer in zip(self.layer_names, self.layers))
        check_model_usable(chain(() if owner is None else owner.named_modules(), *layers_named))
        with preserved_state(modules_of(self.forward_func) + layer_modules, self.train_mode):
            for first in range(0, n_samples, group):
                rows = slice(first, first + group)
                part_path = path if points_at is None else _Rows(path, points_at, formatted, rows)
                parts.append(sweep(
                    self.forward_func, self.layers,
                    tuple(x[rows] for x in formatted), tuple(_rows(b, n_samples, rows) for b in bases),
                    part_path, plan, target=_rows(target, n_samples, rows),
                    additional_forward_args=tuple(_rows(a, n_samples, rows) for a in extra),
                    names=self.layer_names, outputs_at_ends=bool(return_convergence_delta),
                ))  # fmt: skip
        result = SweepResult.concatenate(parts)
        if certify:
            return self._certified(result)
        return self._format(result.attributions, result, return_convergence_delta)

    def _format(self, per_layer: List[Tuple[Tensor, ...]], result: SweepResult, return_convergence_delta: bool) -> Any:
        """``per_layer`` (attributions or their errors) shaped as ``attribute`` returns them, with the deltas."""
        attributions = [tensors[0] if len(tensors) == 1 else tensors for tensors in per_layer]
        single = not isinstance(self.layer, list)
        formatted = attributions[0] if single else attributions
        if not return_convergence_delta:
            return formatted
        change = result.end_outputs - result.start_outputs
        n = change.shape[0]  # a layer with k rows per sample (window attention) sums all k of each
        deltas = [
            sum(t.reshape(n, -1).sum(1) for t in tensors).to(change.dtype) - change for tensors in result.attributions
        ]
        return formatted, (deltas[0] if single else deltas)

    def _certified(self, result: SweepResult) -> CertifiedAttribution:
        attributions, deltas = self._format(result.attributions, result, True)
        change = result.end_outputs - result.start_outputs
        return CertifiedAttribution(attributions, self._format(result.errors, result, False), change,
                                    result.input_sums.to(change.dtype), result.input_scales.to(change.dtype),
                                    deltas)  # fmt: skip


class LayerPathInternalInfluence(LayerPathConductance):
    """``Σ_j ∂F/∂y|_{α_j} · w_j`` over the ``n_steps`` points and weights of a rule along a path.

    Along [`LinearPath`][macattr.paths.LinearPath] this is Captum's
    ``LayerInternalInfluence`` with the same ``method``; the default here,
    ``riemann_left``, is the left Riemann sum ``Σ_j ∂F/∂y|_{α_j} (α_{j+1} − α_j)``
    (Captum's default is ``gausslegendre``). It is the layer analogue of
    integrated gradients without the ``(y − y')`` factor; no convergence delta.

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> LayerPathInternalInfluence(model, model[0]).attribute(torch.rand(2, 3), target=0).shape
        torch.Size([2, 4])
    """

    quantity = "gradient"

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        baselines: Baselines = None,
        target: TargetIndex = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_left",
        internal_batch_size: Optional[int] = None,
        attribute_to_layer_input: bool = False,
        *,
        path: Optional[IntegrationPath] = None,
    ) -> Union[Attribution, List[Attribution]]:
        """Internal influence (N, ...) per layer; arguments as in
        [`LayerPathConductance.attribute()`][macattr.attribution.LayerPathConductance.attribute]."""
        return self._attribute_along(
            self._path_or_own(path), inputs, baselines, target, additional_forward_args, n_steps, method,
            internal_batch_size, False, attribute_to_layer_input,
        )  # fmt: skip


class LayerMAC(LayerPathConductance):
    """Mask Attribute Conductance: conductance along RAM's mask attribute path.

    ``attribute`` takes Captum's arguments (with the paper's default N = 200)
    and, keyword-only, either ``path=`` (a [`MaskAttributionPath`][macattr.paths.MaskAttributionPath]
    or any other path) or the mask path's options: ``mask_ratio`` (r = 0.5),
    ``sharpness`` (δ = 1e4), ``patch_size`` (1), ``thresholds``, ``seed``.
    Without either it integrates along the ``path`` given to the constructor
    (default: ``MaskAttributionPath()`` with the paper's settings).
    Without a ``seed`` (or ``thresholds``) each call draws new pixel thresholds
    from torch's global generator, so two calls give different attributions:
    pass ``seed=`` for repeatable results.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> from macattr import targets
        >>> mac = LayerMAC(targets.output_sum(model), [model[0], model[2]])
        >>> first, last = mac.attribute(torch.rand(1, 3, 8, 8), n_steps=16, seed=0)
        >>> first.shape, last.shape
        (torch.Size([1, 4, 8, 8]), torch.Size([1, 3, 8, 8]))
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Union[nn.Module, Sequence[nn.Module]],
        path: Optional[IntegrationPath] = None,
        *,
        train_mode: bool = False,
        accumulator: Optional[Callable[[], Any]] = None,
    ) -> None:
        super().__init__(forward_func, layer, MaskAttributionPath() if path is None else path, train_mode=train_mode,
                         accumulator=accumulator)  # fmt: skip

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        baselines: Baselines = None,
        target: TargetIndex = None,
        additional_forward_args: Any = None,
        n_steps: int = 200,
        method: str = "riemann_trapezoid",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        *,
        path: Optional[IntegrationPath] = None,
        rule: str = "left",
        certify: bool = False,
        **path_options: Any,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any], CertifiedAttribution]:
        """MAC of every neuron of the layer(s), (N, ...); arguments as in
        [`LayerPathConductance.attribute()`][macattr.attribution.LayerPathConductance.attribute].

        ``method`` must be ``riemann_trapezoid``: the mask path changes in steep
        sigmoid steps, and only a grid that includes both ends of the path
        captures every step of ``y``.
        """
        if method != "riemann_trapezoid":
            raise ValueError(
                f"LayerMAC needs method='riemann_trapezoid' (the mask path jumps at every pixel's threshold; "
                f"only a grid with both ends captures every jump), got {method!r}"
            )
        if path is not None and path_options:
            raise ValueError(f"pass either path= or the mask path's options {sorted(path_options)}, not both")
        if path is None and not path_options:
            path = self.path
        elif path is None:
            try:
                path = MaskAttributionPath(**path_options)
            except TypeError as error:
                options = "mask_ratio, sharpness, patch_size, thresholds, seed, mask_dims, order, descending, exclude"
                raise TypeError(f"LayerMAC.attribute: {error}; the mask path's options are {options}") from None
        return self._attribute_along(
            path, inputs, baselines, target, additional_forward_args, n_steps, method,
            internal_batch_size, return_convergence_delta, attribute_to_layer_input, rule, certify,
        )  # fmt: skip


__all__ = [
    "CertifiedAttribution",
    "LayerMAC",
    "LayerPathConductance",
    "LayerPathInternalInfluence",
]
