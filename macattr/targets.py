"""Scalar-per-sample targets ``F`` for models whose output is not one number per sample.

``gradient_magnitude(model)``, ``output_sum(model)``, ``output_mean(model)`` and
``window(model, ...)`` wrap a model (N, C, H, W) → (N, C', H', W') into a module
whose forward returns one value per sample, shape (N,). The wrapper is an
``nn.Module`` holding the model, so ``wrapper.modules()`` contains the model's
layers and attribution classes can check that a layer belongs to it.
``NAMED_TARGETS`` maps the names ``rank_layers`` and the command accept to their
reductions (N, ...) → (N,); ``named(model, name)`` wraps a model with one.

Captum's ``target`` (class index, tuple, or per-sample list/tensor; the type
``TargetIndex``) is applied by [`select_target()`][macattr.targets.select_target] for models that already
output a score per class.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from macattr._checks import check_int
from macattr.vocabulary import TARGET_NAMES

TargetIndex = Union[None, int, tuple, Tensor, Sequence[Union[int, tuple]]]


def gradient_magnitude_of(images: Tensor, eps: float = 1e-12) -> Tensor:
    """LAM/RAM target: per sample, ``Σ sqrt((I[h] − I[h+1])² + (I[w] − I[w+1])²)``.

    images: (N, C, H, W) with H, W ≥ 2 → (N,) summed over channels and the
    (H−1)×(W−1) grid of forward differences. ``eps`` inside the root keeps the
    gradient finite where the image is flat (it adds at most ``sqrt(eps)`` per term).

    Examples:
        >>> image = torch.zeros(1, 1, 2, 2)
        >>> image[0, 0, 0, 0] = 1.0  # one step of 1 down and one to the right
        >>> round(float(gradient_magnitude_of(image)), 6)
        1.414214
    """
    if images.dim() != 4 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"gradient_magnitude needs outputs (N, C, H, W) with H, W >= 2, got {tuple(images.shape)}")
    images = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
    down = images[:, :, :-1, :-1] - images[:, :, 1:, :-1]
    right = images[:, :, :-1, :-1] - images[:, :, :-1, 1:]
    return torch.sqrt(down.square() + right.square() + eps).flatten(1).sum(1)


def output_sum_of(images: Tensor) -> Tensor:
    """Per-sample sum of every output element: (N, ...) → (N,).

    Examples:
        >>> output_sum_of(torch.ones(2, 3, 4)).tolist()
        [12.0, 12.0]
    """
    return images.reshape(images.shape[0], -1).sum(1)


def output_mean_of(images: Tensor) -> Tensor:
    """Per-sample mean of every output element: (N, ...) → (N,).

    Examples:
        >>> output_mean_of(torch.arange(4.0).reshape(1, 4)).tolist()
        [1.5]
    """
    return images.reshape(images.shape[0], -1).mean(1)


OutputSpec = Union[None, str, int, Callable[[Any], Tensor]]


def pick_output(value: Any, output: OutputSpec = None) -> Tensor:
    """The tensor of a model's output to attribute: ``output`` is a key (of a Hugging Face ``ModelOutput`` or a
    dict), an index (of a tuple or list), or a function of the whole output; ``None`` takes the output itself
    when it is a tensor and its ``logits`` when it has them.

    Examples:
        >>> pick_output({"logits": torch.ones(2, 3), "hidden": torch.zeros(2)}).shape
        torch.Size([2, 3])
        >>> pick_output((torch.zeros(1), torch.ones(2)), 1).tolist()
        [1.0, 1.0]
    """
    if output is None:
        if isinstance(value, Tensor):
            return value
        if isinstance(value, Mapping) and "logits" in value:
            return value["logits"]
        keys = f" with keys {list(value.keys())}" if isinstance(value, Mapping) else ""
        raise TypeError(
            f"the model returns {type(value).__name__}{keys}, not a tensor; pass output= naming what to attribute "
            "(a key such as 'last_hidden_state', an index, or a function of the output)"
        )
    if callable(output):
        picked = output(value)
    elif isinstance(output, str):
        if not isinstance(value, Mapping) or output not in value:
            keys = list(value.keys()) if isinstance(value, Mapping) else f"none: it is a {type(value).__name__}"
            raise ValueError(f"output={output!r} is not a key of the model's output (keys: {keys})")
        picked = value[output]
    elif isinstance(output, int) and not isinstance(output, bool):
        try:
            picked = value[output]
        except (IndexError, KeyError, TypeError):
            raise ValueError(f"output={output} does not index the model's output ({type(value).__name__})") from None
    else:
        raise TypeError(f"output must be None, a key, an index or a function, got {type(output).__name__}")
    if not isinstance(picked, Tensor):
        raise TypeError(f"output={output!r} gives {type(picked).__name__}, not a tensor")
    return picked


class ReducedModel(nn.Module):
    """``model`` followed by a reduction of its output to one scalar per sample.

    ``output`` picks the tensor from a model that returns several (see
    [`pick_output()`][macattr.targets.pick_output]); ``reduce=None`` keeps that tensor (per-class scores for a
    Captum ``target`` index); ``input_name`` passes the input by that keyword (``inputs_embeds=`` for Hugging
    Face text models) instead of positionally.

    Examples:
        >>> wrapped = ReducedModel(nn.Identity(), output_sum_of, "sum")
        >>> wrapped(torch.ones(2, 3)).shape
        torch.Size([2])
    """

    def __init__(self, model: Callable[..., Tensor], reduce: Optional[Callable[[Tensor], Tensor]], name: str,
                 output: OutputSpec = None, input_name: Optional[str] = None) -> None:  # fmt: skip
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or function), got {type(model).__name__}")
        self.model = model
        self.reduce = reduce
        self.name = name
        self.output = output
        self.input_name = input_name

    def forward(self, *args, **kwargs) -> Tensor:
        if self.input_name is not None:
            first, *rest = args
            value = self.model(*rest, **{self.input_name: first}, **kwargs)
        else:
            value = self.model(*args, **kwargs)
        picked = pick_output(value, self.output)
        return picked if self.reduce is None else self.reduce(picked)

    def extra_repr(self) -> str:
        return f"target={self.name}"


def gradient_magnitude(model: Callable[..., Tensor]) -> ReducedModel:
    """``F`` = gradient magnitude of the output (the LAM/RAM target), see
    [`gradient_magnitude_of()`][macattr.targets.gradient_magnitude_of].

    Examples:
        >>> F = gradient_magnitude(nn.Conv2d(3, 3, 1))
        >>> F(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2])
    """
    return ReducedModel(model, gradient_magnitude_of, "gradient_magnitude")


def output_sum(model: Callable[..., Tensor]) -> ReducedModel:
    """``F`` = sum of the output.

    Examples:
        >>> output_sum(nn.Identity())(torch.ones(2, 5)).tolist()
        [5.0, 5.0]
    """
    return ReducedModel(model, output_sum_of, "sum")


def output_mean(model: Callable[..., Tensor]) -> ReducedModel:
    """``F`` = mean of the output.

    Examples:
        >>> output_mean(nn.Identity())(torch.ones(2, 5)).tolist()
        [1.0, 1.0]
    """
    return ReducedModel(model, output_mean_of, "mean")


NAMED_TARGETS: Dict[str, Callable[[Tensor], Tensor]] = dict(
    zip(TARGET_NAMES, (gradient_magnitude_of, output_sum_of, output_mean_of))
)
"""The targets ``rank_layers`` and the command accept by name: name → reduction (N, ...) → (N,)."""


def named(model: Callable[..., Tensor], name: str) -> ReducedModel:
    """``model`` followed by the reduction ``NAMED_TARGETS[name]``.

    Examples:
        >>> named(nn.Identity(), "mean")(torch.ones(2, 4)).tolist()
        [1.0, 1.0]
    """
    if name not in NAMED_TARGETS:
        raise ValueError(f"target must be one of {sorted(NAMED_TARGETS)}, got {name!r}")
    return ReducedModel(model, NAMED_TARGETS[name], name)


def window(model: Callable[..., Tensor], top: int, left: int, size: int, of: str = "sum") -> ReducedModel:
    """``F`` = ``of`` (a name in ``NAMED_TARGETS``) of the output window
    ``[top : top + size, left : left + size]`` (pixels of the output image).

    Examples:
        >>> F = window(nn.Identity(), top=1, left=1, size=2)
        >>> F(torch.ones(1, 3, 4, 4)).tolist()  # 3 channels × 2 × 2 pixels
        [12.0]
    """
    if of not in NAMED_TARGETS:
        raise ValueError(f"of must be one of {sorted(NAMED_TARGETS)}, got {of!r}")
    reduce = NAMED_TARGETS[of]
    top, left = check_int("top", top, 0), check_int("left", left, 0)
    size = check_int("size", size, 1)

    def crop_then_reduce(images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        if top + size > height or left + size > width:
            raise ValueError(
                f"window top={top}, left={left}, size={size} does not fit the output of size {height}×{width}"
            )
        return reduce(images[..., top : top + size, left : left + size])

    return ReducedModel(model, crop_then_reduce, f"window_{of}")


def expand_target(target: TargetIndex, n_samples: int, repeats: int) -> TargetIndex:
    """Repeat a per-sample ``target`` for ``repeats`` step-major copies of the batch.

    Examples:
        >>> expand_target([2, 7], n_samples=2, repeats=3)  # step-major copies of a per-sample target
        [2, 7, 2, 7, 2, 7]
    """
    if isinstance(target, Tensor) and target.numel() > 1:
        if target.numel() != n_samples:
            raise ValueError(f"target tensor must have one entry per sample ({n_samples}), got {target.numel()}")
        return target.reshape(-1).repeat(repeats)
    if isinstance(target, list):
        if len(target) != n_samples:
            raise ValueError(f"target list must have one entry per sample ({n_samples}), got {len(target)}")
        return target * repeats
    return target


def select_target(output: Tensor, target: TargetIndex) -> Tensor:
    """Captum's target selection, then check one scalar per row: (R, ...) → (R,).

    Examples:
        >>> select_target(torch.arange(6.0).reshape(2, 3), 1).tolist()  # class 1 of each row
        [1.0, 4.0]
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"the forward function must return a tensor, got {type(output).__name__}")
    rows = output.shape[0] if output.dim() else 0
    try:
        selected = _index(output, target, rows)
    except IndexError as error:
        raise ValueError(
            f"target {target!r} does not index the forward function's output of shape {tuple(output.shape)}: {error}"
        ) from None
    if selected.dim() == 2 and selected.shape[1] == 1:
        selected = selected[:, 0]
    if selected.dim() != 1 or selected.shape[0] != rows:
        raise ValueError(
            "the forward function must return one scalar per sample (shape (N,) or (N, 1)) after applying "
            f"target, got shape {tuple(selected.shape)} for {rows} rows; wrap an image model with "
            "macattr.targets (e.g. targets.gradient_magnitude(model)) or pass target="
        )
    return selected


def _index(output: Tensor, target: TargetIndex, rows: int) -> Tensor:
    """``output`` (R, ...) indexed by a Captum-style ``target`` (already expanded to R rows)."""
    if target is None:
        return output
    if isinstance(target, Tensor) and target.numel() == 1:
        return output[:, int(target.item())]
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return output[:, int(target)]
    if isinstance(target, tuple):
        return output[(slice(None), *target)]
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        return torch.stack([output[(i, *t)] for i, t in enumerate(target)])
    if isinstance(target, (Tensor, list)):
        indices = torch.as_tensor(target, device=output.device)
        return output[torch.arange(rows, device=output.device), indices]
    raise TypeError(f"target must be None, an int, a tuple, a tensor or a list, got {type(target).__name__}")


__all__ = [
    "NAMED_TARGETS",
    "OutputSpec",
    "ReducedModel",
    "TargetIndex",
    "expand_target",
    "gradient_magnitude",
    "gradient_magnitude_of",
    "named",
    "output_mean",
    "output_mean_of",
    "output_sum",
    "output_sum_of",
    "pick_output",
    "select_target",
    "window",
]
