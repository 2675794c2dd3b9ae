"""Captum-style layer attribution classes over the engine.

- :class:`LayerPathConductance`: conductance along any path (Eq. 9); along
  :class:`~macattr.paths.LinearPath` it equals Captum's
  ``LayerConductance(method="riemann_trapezoid")``.
- :class:`LayerMAC`: conductance along RAM's mask attribute path.
- :class:`LayerPathInternalInfluence`: the gradient-only variant
  ``Σ_j ∂F/∂y|_{α_j} (α_{j+1} − α_j)``; along the linear path it equals Captum's
  ``LayerInternalInfluence(method="riemann_left")`` ("IG-style" layer importance).

``layer`` may be one module or a list of modules; a list gives a list of
attributions, all from one sweep.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution, LayerAttribution
from torch import Tensor, nn

from macattr._checks import check_finite, check_int
from macattr.engine import sweep
from macattr.paths import LinearPath, MaskAttributionPath, Path
from macattr.safety import modules_of, preserved_state
from macattr.targets import TargetType

Attribution = Union[Tensor, Tuple[Tensor, ...]]
Inputs = Union[Tensor, Tuple[Tensor, ...]]
Baselines = Union[None, float, Tensor, Tuple[Union[float, Tensor], ...]]


def format_inputs(inputs: Inputs) -> Tuple[Tensor, ...]:
    """A tensor or tuple of tensors (N, ...) with one N, floating point and finite → tuple."""
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if not items or not all(isinstance(x, Tensor) for x in items):
        raise TypeError("inputs must be a tensor or a non-empty tuple of tensors")
    for index, x in enumerate(items):
        if not x.is_floating_point() or x.dim() == 0:
            raise TypeError(f"inputs[{index}] must be a floating-point tensor (N, ...), got {x.dtype} {tuple(x.shape)}")
        check_finite(f"inputs[{index}]" if len(items) > 1 else "inputs", x)
    if len({x.shape[0] for x in items}) != 1:
        raise ValueError(f"inputs must share the batch size N, got {[x.shape[0] for x in items]}")
    return tuple(x.detach() for x in items)


def format_baselines(baselines: Baselines, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """``None`` (zeros), a scalar, a tensor or a tuple of them, each broadcastable to its input."""
    if baselines is None:
        baselines = 0.0
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"baselines must have one entry per input ({len(inputs)}), got {len(items)}")
    out = []
    for index, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, numbers.Real) and not isinstance(b, bool):
            b = torch.tensor(float(b))
        if not isinstance(b, Tensor):
            raise TypeError(f"baselines[{index}] must be a number or a tensor, got {type(b).__name__}")
        try:
            broadcast = torch.broadcast_shapes(b.shape, x.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != x.shape:
            raise ValueError(
                f"baselines[{index}] of shape {tuple(b.shape)} does not broadcast to the input shape {tuple(x.shape)}"
            )
        b = b.detach().to(device=x.device, dtype=x.dtype)
        check_finite(f"baselines[{index}]", b)
        out.append(b)
    return tuple(out)


def format_layers(layer: Union[nn.Module, Sequence[nn.Module]], forward_func: Callable) -> List[nn.Module]:
    """One module or a non-empty list of distinct modules, each inside ``forward_func`` when that is a module."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not layers or not all(isinstance(m, nn.Module) for m in layers):
        raise TypeError("layer must be an nn.Module or a non-empty list of nn.Modules")
    if len({id(m) for m in layers}) != len(layers):
        raise ValueError("layer lists the same module more than once")
    known = modules_of(forward_func)
    if known:
        ids = {id(m) for m in known}
        strangers = [type(m).__name__ for m in layers if id(m) not in ids]
        if strangers:
            raise ValueError(f"layer {strangers} is not part of the model behind forward_func")
    return layers


def _steps_per_pass(internal_batch_size: Optional[int], n_samples: int) -> Optional[int]:
    if internal_batch_size is None:
        return None
    check_int("internal_batch_size", internal_batch_size, n_samples)
    return internal_batch_size // n_samples


class LayerPathConductance(LayerAttribution, GradientAttribution):
    """Conductance of every neuron of one or more layers along a path.

    Args:
        forward_func: model or function returning one scalar per sample (N,) or,
            with ``target``, per-class scores (N, K, ...).
        layer: a module, or a list of modules attributed in one sweep.
        path: any path object (default :class:`LinearPath`).
    """

    rule = "conductance"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Union[nn.Module, Sequence[nn.Module]],
        path: Optional[Path] = None,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        layers = format_layers(layer, forward_func)
        LayerAttribution.__init__(self, forward_func, layers if isinstance(layer, (list, tuple)) else layers[0])
        GradientAttribution.__init__(self, forward_func)
        self.layers = layers
        self.path = LinearPath() if path is None else path
        if not callable(getattr(self.path, "bind", None)):
            raise TypeError(f"path must be a path object with bind(), got {type(self.path).__name__}")

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def attribute(
        self,
        inputs: Inputs,
        baselines: Baselines = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any]]:
        """Attributions in the shape of each layer's output (or input), (N, ...).

        Args follow Captum's ``LayerConductance.attribute``: ``baselines`` None
        (zeros), scalar, tensor or tuple; ``target`` as in Captum;
        ``additional_forward_args`` passed after the inputs (tensors with N rows
        are repeated per grid point); ``n_steps`` N ≥ 1 intervals of the grid;
        ``internal_batch_size`` rows per forward pass (≥ N samples; default:
        chosen automatically, memory independent of ``n_steps``).

        Returns:
            per layer a tensor (a tuple for layers with several output tensors);
            a list for a list of layers. With ``return_convergence_delta``, also
            ``Σ attributions − (F(X(end)) − F(X(start)))`` per sample, (N,) (a
            list for a list of layers).
        """
        return self._attribute_along(
            self.path,
            inputs,
            baselines,
            target,
            additional_forward_args,
            n_steps,
            internal_batch_size,
            return_convergence_delta,
            attribute_to_layer_input,
        )

    def _attribute_along(
        self,
        path: Path,
        inputs: Inputs,
        baselines: Baselines,
        target: TargetType,
        additional_forward_args: Any,
        n_steps: int,
        internal_batch_size: Optional[int],
        return_convergence_delta: bool,
        attribute_to_layer_input: bool,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any]]:
        if return_convergence_delta and not self.has_convergence_delta():
            raise ValueError(f"return_convergence_delta is not available for {type(self).__name__}")
        check_int("n_steps", n_steps, 1)
        formatted = format_inputs(inputs)
        bases = format_baselines(baselines, formatted)
        steps_per_pass = _steps_per_pass(internal_batch_size, formatted[0].shape[0])
        extra = additional_forward_args
        extra = () if extra is None else extra if isinstance(extra, tuple) else (extra,)
        with preserved_state(modules_of(self.forward_func) + self.layers):
            result = sweep(
                self.forward_func,
                self.layers,
                formatted,
                bases,
                path,
                n_steps,
                rule=self.rule,
                target=target,
                additional_forward_args=extra,
                steps_per_pass=steps_per_pass,
                to_layer_input=bool(attribute_to_layer_input),
            )
        attributions = [tensors[0] if len(tensors) == 1 else tensors for tensors in result.attributions]
        single = not isinstance(self.layer, list)
        formatted_attributions = attributions[0] if single else attributions
        if not return_convergence_delta:
            return formatted_attributions
        change = result.end_outputs - result.start_outputs
        deltas = [
            sum(t.flatten(1).sum(1) for t in tensors).to(change.dtype) - change for tensors in result.attributions
        ]
        return formatted_attributions, (deltas[0] if single else deltas)


class LayerPathInternalInfluence(LayerPathConductance):
    """``Σ_j ∂F/∂y|_{α_j} (α_{j+1} − α_j)`` over the N left grid points of a path.

    Along :class:`LinearPath` this is Captum's ``LayerInternalInfluence`` with
    ``method="riemann_left"``: the layer analogue of integrated gradients without
    the ``(y − y')`` factor. No convergence delta.
    """

    rule = "gradient"

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False


class LayerMAC(LayerPathConductance):
    """Mask Attribute Conductance: conductance along RAM's mask attribute path.

    ``attribute`` takes the path's settings (``mask_ratio``, ``sharpness``,
    ``patch_size``, ``thresholds``, ``seed``; see
    :class:`~macattr.paths.MaskAttributionPath`) with the paper's defaults:
    r = 0.5, δ = 1e4, N = 200, baseline 0. Inputs are images (N, C, H, W).
    """

    def __init__(self, forward_func: Callable[..., Tensor], layer: Union[nn.Module, Sequence[nn.Module]]) -> None:
        super().__init__(forward_func, layer, path=MaskAttributionPath())

    def attribute(
        self,
        inputs: Inputs,
        baselines: Baselines = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 200,
        mask_ratio: float = 0.5,
        sharpness: float = 1e4,
        patch_size: int = 1,
        thresholds: Optional[Tensor] = None,
        seed: Optional[int] = None,
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
    ) -> Union[Attribution, List[Attribution], Tuple[Any, Any]]:
        """MAC of every neuron of the layer(s), (N, ...); see :meth:`LayerPathConductance.attribute`."""
        path = MaskAttributionPath(mask_ratio, sharpness, patch_size, thresholds, seed)
        return self._attribute_along(
            path,
            inputs,
            baselines,
            target,
            additional_forward_args,
            n_steps,
            internal_batch_size,
            return_convergence_delta,
            attribute_to_layer_input,
        )
