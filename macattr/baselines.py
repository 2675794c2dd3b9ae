"""Starts of the path that step sums can integrate: baselines for tokens and patches, and the check that finds a
singular one.

A normalisation layer (LayerNorm, RMSNorm, GroupNorm, ...) divides by ``sqrt(mean square + eps)`` of its
input. Where the path starts at an input that makes that mean square vanish (the zero vector for a token, a zero
patch under a bias-free embedding), the layer's Jacobian at the start is about ``1 / sqrt(eps)`` (1e3 for
eps = 1e-6), and a step sum that evaluates the gradient there multiplies it by a whole step: the integral is
finite and small, the step sum is not near it until N is in the thousands.
[`singular_normalizations()`][macattr.baselines.singular_normalizations] finds such layers on one forward
pass; ``rank_layers`` runs it at the start of every ranking's path and warns. The baselines below keep every
normalised input away from zero:

- [`token_embedding()`][macattr.baselines.token_embedding]: the embedding of one token (pad, mask or unk), the
  start that language-model attributions usually take;
- [`mean_embedding()`][macattr.baselines.mean_embedding]: the mean of the embedding table;
- [`mean_colour()`][macattr.baselines.mean_colour]: each channel's mean over a set of images, for patch masks
  on vision models.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

SINGULAR_FACTOR = 10.0  # a normalised input whose mean square is below this many eps is "at the eps scale"


def _embedding_table(model: nn.Module) -> Tensor:
    """The (vocabulary, hidden) weight of ``model`` if it is an ``nn.Embedding``, else of its
    ``get_input_embeddings()`` (Hugging Face models); read from accelerate's hook when it is offloaded."""
    from macattr.placement import offloaded_value

    get = getattr(model, "get_input_embeddings", None)
    embedding = model if isinstance(model, nn.Embedding) else get() if callable(get) else None
    if not isinstance(embedding, nn.Embedding):
        raise TypeError(f"model must be an nn.Embedding or have get_input_embeddings() returning one, got "
                        f"{type(model).__name__}")  # fmt: skip
    loaded = offloaded_value(embedding, "weight", embedding.weight)
    return embedding.weight if loaded is None else loaded


def token_embedding(model: nn.Module, token_id: int) -> Tensor:
    """The input embedding of token ``token_id`` (hidden,), detached: a baseline for ``mask_dims="sequence"``
    paths over ``inputs_embeds`` (each masked position becomes this token).

    Examples:
        >>> table = nn.Embedding(10, 4)
        >>> torch.equal(token_embedding(table, 3), table.weight[3].detach())
        True
    """
    weight = _embedding_table(model)
    if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral) or not 0 <= token_id < len(weight):
        raise ValueError(f"token_id must be a token index in [0, {len(weight) - 1}], got {token_id!r}")
    return weight[int(token_id)].detach().clone()


def mean_embedding(model: nn.Module) -> Tensor:
    """The mean of the input embedding table over the vocabulary (hidden,), detached.

    Examples:
        >>> table = nn.Embedding(2, 3)
        >>> torch.allclose(mean_embedding(table), table.weight.detach().mean(0))
        True
    """
    return _embedding_table(model).detach().mean(0)


def mean_colour(images: Tensor) -> Tensor:
    """Each channel's mean over ``images`` (N, C, H, W) as a (1, C, 1, 1) baseline, in the images' units: a
    masked patch becomes the data's mean colour instead of black.

    Examples:
        >>> mean_colour(torch.ones(2, 3, 4, 4)).shape
        torch.Size([1, 3, 1, 1])
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = (images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"images must be a float tensor (N, C, H, W), got {got}")
    return images.detach().mean(dim=(0, 2, 3), keepdim=True)


@dataclass(frozen=True)
class SingularNormalization:
    """A normalisation layer whose input, at some rows, has a mean square at the eps scale.

    Attributes:
        name: the layer's name in the model; kind: its class name; eps: its epsilon.
        mean_square: the smallest mean square (over the normalised dimensions, centred where the layer
            centres) among its input rows.
        share: the fraction of its rows (tokens, positions, groups) below ``SINGULAR_FACTOR · eps``, in (0, 1].
    """

    name: str
    kind: str
    eps: float
    mean_square: float
    share: float

    def describe(self) -> str:
        return (f"{self.name} ({self.kind}, eps {self.eps:g}) sees a mean square of {self.mean_square:.3g} in "
                f"{100 * self.share:.3g} % of its rows")  # fmt: skip


def _epsilon(module: nn.Module) -> float | None:
    """The epsilon of a normalisation layer (``eps`` or Hugging Face's ``variance_epsilon``), else None."""
    if not type(module).__name__.endswith("Norm") and not isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return None
    for attribute in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(module, attribute, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _row_mean_squares(module: nn.Module, x: Tensor) -> Tensor:
    """The statistic ``module`` divides by, without eps, one value per normalised row: the variance over the
    normalised dimensions for LayerNorm, per group for GroupNorm, the mean square over the last dimension for
    other ``*Norm`` layers (RMSNorm and its Hugging Face variants)."""
    x = x.detach().double()
    if isinstance(module, nn.GroupNorm):
        return x.reshape(x.shape[0], module.num_groups, -1).var(-1, unbiased=False).flatten()
    if isinstance(module, nn.LayerNorm):
        dims = len(module.normalized_shape)
        if tuple(x.shape[-dims:]) != tuple(module.normalized_shape) and x.dim() > 2:
            x = x.movedim(1, -1)  # a channels-first LayerNorm (ConvNeXt's) normalises dimension 1
        return x.flatten(-dims).var(-1, unbiased=False).flatten()
    return x.square().mean(-1).flatten()


def singular_normalizations(model: nn.Module, run: Callable[[], Any]) -> List[SingularNormalization]:
    """The normalisation layers of ``model`` whose input has a mean square below ``SINGULAR_FACTOR`` × their eps
    in some row while ``run()`` runs (a forward pass at the start of a path), in the order they ran.

    Hooks are removed afterwards, also when ``run`` fails; ``run`` runs without autograd.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4))
        >>> [found.name for found in singular_normalizations(model, lambda: model(torch.zeros(2, 4)))]
        ['1']
        >>> singular_normalizations(model, lambda: model(torch.randn(2, 4)))
        []
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found: dict = {}
    handles = []

    def hook_for(name: str, module: nn.Module, eps: float) -> Callable[..., None]:
        def hook(_: nn.Module, args: Tuple[Any, ...]) -> None:
            if not args or not isinstance(args[0], Tensor) or not args[0].is_floating_point() or args[0].numel() == 0:
                return
            squares = _row_mean_squares(module, args[0])
            low = squares < SINGULAR_FACTOR * eps
            if bool(low.any()) and name not in found:
                found[name] = SingularNormalization(name, type(module).__name__, eps, float(squares.min()),
                                                    float(low.double().mean()))  # fmt: skip

        return hook

    try:
        for name, module in model.named_modules():
            eps = _epsilon(module)
            if eps is not None:
                handles.append(module.register_forward_pre_hook(hook_for(name, module, eps)))
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return list(found.values())


def singular_start_message(found: Sequence[SingularNormalization]) -> str:
    """One warning for the layers ``found`` at a path's start, naming the remedies."""
    shown = "; ".join(f.describe() for f in found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
    largest = max(1 / math.sqrt(f.eps) for f in found)
    return (f"the path starts where a normalisation layer is singular: {shown}. Its Jacobian there is up to "
            f"~{largest:.3g} and step sums converge slowly from it. Start from a baseline that keeps normalised "
            "inputs away from zero: macattr.baselines.token_embedding(model, pad_id) or mean_embedding(model) for "
            "token inputs, mean_colour(images) for patches")  # fmt: skip


__all__ = [
    "SINGULAR_FACTOR",
    "SingularNormalization",
    "mean_colour",
    "mean_embedding",
    "singular_normalizations",
    "singular_start_message",
    "token_embedding",
]
