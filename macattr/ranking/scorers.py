"""The scorers of the registered methods ([`macattr.ranking.methods`][macattr.ranking.methods]).

A scorer takes the analysed images of a batch, their ground truth (or ``None``) and their indices among the
analysed images, and returns a (B, L) float64 tensor: one score per image and layer. Attribution scorers score a
layer by the mean over its neurons of ``|attribution|``; ``gradnorm`` by the relative gradient norm of its own
parameters, ``fisher`` by the mean squared gradient of the loss over them. The orders (``random_order``,
``uniform_order``, ``last_order``, ``first_order``) need no data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from macattr.ranking.batches import image_seed

if TYPE_CHECKING:
    from macattr.ranking.methods import ScoringContext

Scorer = Callable[[Tensor, Optional[Tensor], List[int]], Tensor]


def neuron_means(attributions: Sequence[Any], n_images: int) -> Tensor:
    """Per layer, the mean over its neurons of |attribution|: list of (B·k, ...) tensors or tuples → (B, L) float64.

    A layer whose rows are ``k`` per image (window attention: (B · windows, n, C))
    has all ``k`` rows of an image counted as that image's neurons.

    Examples:
        >>> neuron_means([torch.tensor([[1.0, -3.0]]), torch.tensor([[[2.0]]])], 1).tolist()
        [[2.0, 2.0]]
    """
    columns = []
    for attribution in attributions:
        tensors = attribution if isinstance(attribution, tuple) else (attribution,)
        flat = torch.cat([t.detach().abs().reshape(n_images, -1).double() for t in tensors], dim=1)
        columns.append(flat.mean(1))
    return torch.stack(columns, dim=1)


def _labels(y: Optional[Tensor]) -> List[int]:
    """Each image's class from its ground truth, for ``target="label"``."""
    if y is None or y.dim() != 1 or y.is_floating_point():
        raise TypeError("target='label' needs (input, label) batches whose labels are class indices (N,), "
                        f"got {None if y is None else (y.dtype, tuple(y.shape))}")  # fmt: skip
    return y.tolist()


def _sweep_scorer(context: ScoringContext, attribution_class: type, **fixed: Any) -> Scorer:
    """Mean |attribution| per layer of ``attribution_class`` (a layer attribution class of
    [`macattr.attribution`][macattr.attribution]) along the context's path: all layers in one sweep per batch,
    with ``fixed`` passed to every ``attribute`` call."""
    settings = context.settings
    attribution = attribution_class(context.forward, context.layers, train_mode=settings.train_mode)
    common = dict(n_steps=settings.n_steps, internal_batch_size=settings.internal_batch_size, **fixed)

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Tensor:
        path = _seeded(context.path, indices, settings.seed)
        target = _labels(y) if settings.target == "label" else context.target
        attributions = attribution.attribute(x, settings.baselines, target=target, path=path, **common)
        return neuron_means(attributions, x.shape[0])

    return score


def _seeded(path: Any, indices: List[int], seed: int) -> Any:
    """The path with one threshold seed per analysed image when it takes them (``for_images``)."""
    for_images = getattr(path, "for_images", None)
    return for_images([image_seed(seed, i) for i in indices]) if callable(for_images) else path


def attribution_scorer(context: ScoringContext) -> Scorer:
    """Mean |conductance| per layer along the context's path, all layers in one sweep per batch; a path with
    ``for_images`` (the mask path) gets the seeds of images ``(seed, i)`` for the analysed images ``i``.

    Examples:
        >>> from macattr import targets
        >>> from macattr.paths import MaskAttributionPath
        >>> from macattr.ranking.methods import ScoringContext
        >>> from macattr.ranking.settings import RankSettings
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> context = ScoringContext(RankSettings(n_steps=8), model, model, targets.output_sum(model), None,
        ...                          [model[0], model[2]], ["0", "2"], MaskAttributionPath(), None)
        >>> attribution_scorer(context)(torch.rand(2, 3, 8, 8), None, [0, 1]).shape  # (images, layers)
        torch.Size([2, 2])
    """
    from macattr.attribution import LayerPathConductance

    return _sweep_scorer(context, LayerPathConductance, rule=context.settings.rule)


def influence_scorer(context: ScoringContext) -> Scorer:
    """Mean |internal influence| per layer along the context's path (left Riemann sum of ∂F/∂y), all layers
    in one sweep per batch."""
    from macattr.attribution import LayerPathInternalInfluence

    return _sweep_scorer(context, LayerPathInternalInfluence)


def gradnorm_scorer(context: ScoringContext) -> Scorer:
    """Per image, the relative gradient norm ``‖∇_θ L‖ / ‖θ‖`` of each layer's own parameters θ under the
    context's ``loss`` of (output, ground truth); the criterion of surgical fine-tuning (Lee et al., 2023).

    Examples:
        >>> from macattr.ranking.methods import ScoringContext
        >>> from macattr.ranking.settings import RankSettings
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> context = ScoringContext(RankSettings("gradnorm"), model, model, model, None, [model[0], model[2]],
        ...                          ["0", "2"],
        ...                          None, lambda out, gt: (out - gt).abs().mean())
        >>> gradnorm_scorer(context)(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), [0, 1]).shape
        torch.Size([2, 2])
    """
    params = _own_parameters(context)
    weight_norms = [math.sqrt(sum(float(p.detach().double().square().sum()) for p in group)) for group in params]

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Tensor:
        squares = _squared_gradients(context, params, x, y)  # (B, L): Σ over each layer's parameters of g²
        return squares.sqrt() / torch.tensor(weight_norms, dtype=torch.float64).clamp(min=1e-12)

    return score


def fisher_scorer(context: ScoringContext) -> Scorer:
    """Per image, the diagonal empirical Fisher information of each layer's own parameters θ: the mean over
    them of ``(∂L/∂θ)²`` under the context's ``loss`` of (output, ground truth) of that image alone (the
    criterion of sensitivity-aware fine-tuning, SPT).

    Examples:
        >>> from macattr.ranking.methods import ScoringContext
        >>> from macattr.ranking.settings import RankSettings
        >>> model = nn.Sequential(nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.fill_(1.0)
        >>> context = ScoringContext(RankSettings("fisher"), model, model, model, None, [model[0]], ["0"], None,
        ...                          lambda out, gt: (out - gt).square().sum())
        >>> fisher_scorer(context)(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 1), [0])  # ∂L/∂w = 2·3·x = (6, 12)
        tensor([[90.]], dtype=torch.float64)
    """
    params = _own_parameters(context)
    sizes = torch.tensor([sum(p.numel() for p in group) for group in params], dtype=torch.float64)

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Tensor:
        return _squared_gradients(context, params, x, y) / sizes

    return score


def _own_parameters(context: ScoringContext) -> List[List[nn.Parameter]]:
    """Each layer's own parameters; refuses a layer that owns none (it has nothing to take a gradient of)."""
    params = [list(m.parameters(recurse=False)) for m in context.layers]
    empty = [name for name, group in zip(context.names, params) if not group]
    if empty:
        raise ValueError(f"method={context.settings.method!r} needs layers that own parameters; {empty} own none")
    return params


def _squared_gradients(context: ScoringContext, params: List[List[nn.Parameter]], x: Tensor,
                       y: Optional[Tensor]) -> Tensor:  # fmt: skip
    """Per image and layer, ``Σ_θ (∂L/∂θ)²`` over the layer's own parameters, with ``L = loss(model(x_i), y_i)``
    of that image alone: (B, L) float64."""
    flat = [p for group in params for p in group]
    rows = []
    for one_x, one_y in zip(x.split(1), y.split(1)):
        with torch.enable_grad():
            for p in flat:
                p.requires_grad_(True)
            grads = torch.autograd.grad(context.loss(context.outputs(one_x), one_y), flat, allow_unused=True)
        by_id = {id(p): g for p, g in zip(flat, grads)}
        rows.append([sum(float(by_id[id(p)].double().square().sum()) for p in group if by_id[id(p)] is not None)
                     for group in params])  # fmt: skip
    return torch.tensor(rows, dtype=torch.float64)


def _van_der_corput(i: int) -> float:
    """The i-th point of the base-2 van der Corput sequence: the bits of i mirrored behind the point."""
    position, base = 0.0, 0.5
    while i:
        position, i, base = position + base * (i & 1), i >> 1, base / 2
    return position


def random_order(names: List[str], seed: int) -> Dict[str, float]:
    """Seeded uniform scores in [0, 1).

    Examples:
        >>> random_order(["a", "b"], seed=0) == random_order(["a", "b"], seed=0)
        True
    """
    values = torch.rand(len(names), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    return dict(zip(names, values))


def uniform_order(names: List[str], seed: int) -> Dict[str, float]:
    """Scores in van der Corput order through depth (``names`` in depth order), so that every top-k is spread
    evenly; ``seed`` plays no part.

    Examples:
        >>> scores = uniform_order([f"layer{i}" for i in range(8)], seed=0)
        >>> sorted(scores, key=scores.get, reverse=True)[:4]  # every top-k spread through depth
        ['layer4', 'layer2', 'layer6', 'layer1']
    """
    count = len(names)
    # points i < 2^(m+1) with 2^m >= count land in every one of the count buckets of [0, 1)
    buckets = (int(_van_der_corput(i) * count) for i in range(1, 2 ** (count.bit_length() + 1)))
    rank_of = {index: rank for rank, index in enumerate(dict.fromkeys(buckets))}
    return {name: 1.0 - rank_of[index] / count for index, name in enumerate(names)}


def first_order(names: List[str], seed: int) -> Dict[str, float]:
    """The shallowest layers first (``names`` in depth order); ``seed`` plays no part.

    Examples:
        >>> first_order(["a", "b"], seed=0)
        {'a': 1.0, 'b': 0.5}
    """
    return {name: 1 - index / len(names) for index, name in enumerate(names)}


def last_order(names: List[str], seed: int) -> Dict[str, float]:
    """The deepest layers first (``names`` in depth order); ``seed`` plays no part.

    Examples:
        >>> last_order(["a", "b", "c"], seed=0)
        {'a': 0.3333333333333333, 'b': 0.6666666666666666, 'c': 1.0}
    """
    return {name: (index + 1) / len(names) for index, name in enumerate(names)}


__all__ = [
    "Scorer",
    "attribution_scorer",
    "first_order",
    "fisher_scorer",
    "gradnorm_scorer",
    "influence_scorer",
    "last_order",
    "neuron_means",
    "random_order",
    "uniform_order",
]
