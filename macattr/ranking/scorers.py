"""The scorers of the registered methods ([`macattr.ranking.methods`][macattr.ranking.methods]).

A scorer takes the analysed images of a batch, their ground truth (or ``None``) and their indices among the
analysed images, and returns a (B, L) float64 tensor: one score per image and layer, or
[`ImageScores`][macattr.ranking.scorers.ImageScores], the scores with their estimated errors and certificate.
Attribution scorers score a layer by the mean over its neurons of ``|attribution|``; ``gradnorm`` by the
relative gradient norm of its own parameters, ``fisher`` by the mean squared gradient of the loss over them.
``inverse_condition`` scores a layer from its weights alone; the orders (``random_order``, ``random_block_order``,
``uniform_order``, ``last_order``, ``first_order``) need no data.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor, nn

from macattr.layers import block_of, own_parameters
from macattr.paths import IntegrationPath, interval_of
from macattr.placement import is_dtensor, offloaded_values
from macattr.ranking.batches import image_seed
from macattr.targets import TargetIndex


class ScoringSettings(Protocol):
    """The settings a scorer reads (a [`RankSettings`][macattr.ranking.settings.RankSettings] has them all)."""

    method: str
    target: Any
    n_steps: int
    rule: str
    baselines: Any
    seed: int
    internal_batch_size: Optional[int]
    train_mode: bool


@dataclass(frozen=True)
class ScoringContext:
    """What a method's scorer is built from.

    Attributes:
        settings: the ranking's settings.
        model: the network being ranked.
        outputs: ``outputs(x)`` → the model's output tensor for a batch (``output=`` and ``input_name=``
            applied): what a loss compares with the ground truth.
        forward: the function attributed, ``forward(x)`` → ``F`` (N,), or per-class scores picked by ``target``.
        target: Captum's class index for classifiers (``None`` when ``forward`` gives one value per sample).
        layers: the modules to score, in depth order; ``names`` are their names in the model.
        path: the integration path of a method that uses one (``None`` otherwise).
        loss: ``loss(output, ground_truth)`` of one image (a batch of 1) → a scalar, for methods that need
            ground truth (default: the mean absolute error).
    """

    settings: ScoringSettings
    model: nn.Module
    outputs: Callable[[Tensor], Tensor]
    forward: Callable[..., Tensor]
    target: TargetIndex
    layers: List[nn.Module]
    names: List[str]
    path: Optional[IntegrationPath]
    loss: Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ImageScores:
    """A scorer's answer for B images and L layers.

    Attributes:
        scores: (B, L) float64, one score per image and layer.
        errors: (B, L) float64 or None: each score's estimated absolute error against the integral (same units).
        input_gaps: (B,) float64 or None: each image's relative completeness gap at the input (see
            [`CertifiedAttribution.input_gap`][macattr.attribution.CertifiedAttribution.input_gap]).
    """

    scores: Tensor
    errors: Optional[Tensor] = None
    input_gaps: Optional[Tensor] = None

    @classmethod
    def of(cls, result: Union[Tensor, ImageScores]) -> ImageScores:
        """A scorer's result as ``ImageScores`` (a plain (B, L) tensor has no errors)."""
        return result if isinstance(result, ImageScores) else cls(result)


Scorer = Callable[[Tensor, Optional[Tensor], List[int]], Union[Tensor, ImageScores]]


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
    first = columns[0].device  # layers on several devices (a device map): their means meet on the first's
    return torch.stack([column.to(first) for column in columns], dim=1)


def _labels(y: Optional[Tensor]) -> List[Any]:
    """Each sample's target from its batch, for ``target="label"``: class indices (N,) pick ``output[i, c]``;
    index rows (N, k) pick ``output[i, *row]`` (a causal LM's (position, token) per sequence, say).

    Examples:
        >>> _labels(torch.tensor([2, 0])), _labels(torch.tensor([[15, 7], [15, 3]]))
        ([2, 0], [(15, 7), (15, 3)])
    """
    if y is None or y.dim() not in (1, 2) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError("target='label' needs (input, label) batches whose labels are class indices (N,) or index "
                        f"rows (N, k), got {None if y is None else (y.dtype, tuple(y.shape))}")  # fmt: skip
    return y.tolist() if y.dim() == 1 else [tuple(row) for row in y.tolist()]


def _sweep_scorer(context: ScoringContext, attribution_class: type, **fixed: Any) -> Scorer:
    """Mean |attribution| per layer of ``attribution_class`` (a layer attribution class of
    [`macattr.attribution`][macattr.attribution]) along the context's path: all layers in one sweep per batch,
    with ``fixed`` passed to every ``attribute`` call. With ``certify=True`` in ``fixed``, each score comes with
    its estimated error (the mean over the layer's neurons of theirs, which bounds the error of the mean of
    ``|attribution|``) and each image with its completeness gap at the input."""
    settings = context.settings
    attribution = attribution_class(context.forward, context.layers, train_mode=settings.train_mode)
    common = dict(n_steps=settings.n_steps, internal_batch_size=settings.internal_batch_size, **fixed)

    unchecked = [True]  # the path's start is checked on the first batch

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Union[Tensor, ImageScores]:
        path = _seeded(context.path, indices, settings.seed)
        if unchecked:
            unchecked.clear()
            warn_at_a_singular_start(context, path, x)
        target = _labels(y) if settings.target == "label" else context.target
        result = attribution.attribute(x, settings.baselines, target=target, path=path, **common)
        if not fixed.get("certify"):
            return neuron_means(result, x.shape[0])
        return ImageScores(neuron_means(result.attributions, x.shape[0]), neuron_means(result.errors, x.shape[0]),
                           result.input_gap.detach().double().cpu())  # fmt: skip

    return score


def warn_at_a_singular_start(context: ScoringContext, path: IntegrationPath, x: Tensor) -> None:
    """Warn when a normalisation layer is singular at the start of ``path`` for the batch ``x`` in more of its
    rows than at the end (the data's own flat patches are not the start's doing): two forward passes without
    autograd; see [`macattr.baselines`][macattr.baselines]."""
    from macattr.baselines import singular_normalizations, singular_start_message

    base = torch.as_tensor(context.settings.baselines, dtype=x.dtype, device=x.device)
    points = path.bind((x,), (torch.broadcast_to(base, x.shape),))

    def singular_at(alpha: float) -> list:
        point = points(torch.tensor([alpha], dtype=torch.float64))[0]
        return singular_normalizations(context.model, lambda: context.outputs(point))

    at_start, at_end = (singular_at(alpha) for alpha in interval_of(path))
    shares_at_end = {found.name: found.share for found in at_end}
    found = [f for f in at_start if f.share > shares_at_end.get(f.name, 0.0)]
    if found:
        warnings.warn(f"rank_layers: {singular_start_message(found)}", UserWarning, stacklevel=5)


def _seeded(path: Any, indices: List[int], seed: int) -> Any:
    """The path with one threshold seed per analysed image when it takes them (``for_images``)."""
    for_images = getattr(path, "for_images", None)
    return for_images([image_seed(seed, i) for i in indices]) if callable(for_images) else path


def attribution_scorer(context: ScoringContext) -> Scorer:
    """Mean |conductance| per layer along the context's path, all layers in one sweep per batch, with each
    score's estimated error and each image's completeness gap at the input; a path with ``for_images`` (the mask
    path) gets the seeds of images ``(seed, i)`` for the analysed images ``i``.

    Examples:
        >>> from macattr import targets
        >>> from macattr.paths import MaskAttributionPath
        >>> from macattr.ranking.settings import RankSettings
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> context = ScoringContext(RankSettings(n_steps=8), model, model, targets.output_sum(model), None,
        ...                          [model[0], model[2]], ["0", "2"], MaskAttributionPath(), None)
        >>> result = attribution_scorer(context)(torch.rand(2, 3, 8, 8), None, [0, 1])
        >>> result.scores.shape, result.errors.shape, result.input_gaps.shape  # (images, layers), per image
        (torch.Size([2, 2]), torch.Size([2, 2]), torch.Size([2]))
    """
    from macattr.attribution import LayerPathConductance

    return _sweep_scorer(context, LayerPathConductance, rule=context.settings.rule, certify=True)


def influence_scorer(context: ScoringContext) -> Scorer:
    """Mean |internal influence| per layer along the context's path (left Riemann sum of ∂F/∂y), all layers
    in one sweep per batch."""
    from macattr.attribution import LayerPathInternalInfluence

    return _sweep_scorer(context, LayerPathInternalInfluence)


def gradnorm_scorer(context: ScoringContext) -> Scorer:
    """Per image, the relative gradient norm ``‖∇_θ L‖ / ‖θ‖`` of each layer's own parameters θ under the
    context's ``loss`` of (output, ground truth); the criterion of surgical fine-tuning (Lee et al., 2023).

    Examples:
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
    params = [own_parameters(m) for m in context.layers]
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


def inverse_condition(layers: Dict[str, nn.Module]) -> Dict[str, float]:
    """Per layer, ``1 / κ`` for the worst-conditioned of its own weight matrices, ``κ = σ_max / σ_min`` of the
    tensor viewed as (out, in · kernel) (a float64 SVD): 1 for an orthogonal matrix, 0 for a singular one. A
    layer with no weight matrix (a norm, a bias-only or parameter-free module) scores 0. High scores are the
    best-conditioned layers, the ones the condition-number criterion (KappaTune) fine-tunes. A sharded weight
    (FSDP2's DTensor) is gathered whole first, a collective that every process of its mesh runs; an offloaded one
    (accelerate) is read from its hook.

    Examples:
        >>> scaled = nn.Linear(2, 2, bias=False)
        >>> _ = scaled.weight.data.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
        >>> inverse_condition({"scaled": scaled, "relu": nn.ReLU()})
        {'scaled': 0.25, 'relu': 0.0}
    """
    scores = {}
    for name, module in layers.items():
        held = offloaded_values(module)
        inverse = [0.0] if not any(p.dim() >= 2 for p in own_parameters(module)) else []
        for weight in (held.get(id(p), p) for p in own_parameters(module) if p.dim() >= 2):
            if is_dtensor(weight):  # sharded: gathered whole, a collective that every process runs
                weight = weight.full_tensor()
            singular = torch.linalg.svdvals(weight.detach().double().reshape(weight.shape[0], -1))
            inverse.append(float(singular[-1] / singular[0]) if singular[0] > 0 else 0.0)
        scores[name] = min(inverse)
    return scores


def random_order(names: List[str], seed: int) -> Dict[str, float]:
    """Seeded uniform scores in [0, 1).

    Examples:
        >>> random_order(["a", "b"], seed=0) == random_order(["a", "b"], seed=0)
        True
    """
    values = torch.rand(len(names), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    return dict(zip(names, values))


def random_block_order(names: List[str], seed: int) -> Dict[str, float]:
    """Seeded uniform scores in [0, 1), one per block ([`block_of`][macattr.layers.block_of]) and shared by
    its layers, so that a top k takes whole blocks (see ``LayerScores.units()``).

    Examples:
        >>> scores = random_block_order(["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn"], seed=0)
        >>> scores["blocks.0.attn"] == scores["blocks.0.mlp"] != scores["blocks.1.attn"]
        True
    """
    blocks = list(dict.fromkeys(block_of(name) for name in names))
    drawn = random_order(blocks, seed)
    return {name: drawn[block_of(name)] for name in names}


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
    "ImageScores",
    "Scorer",
    "attribution_scorer",
    "first_order",
    "fisher_scorer",
    "gradnorm_scorer",
    "influence_scorer",
    "inverse_condition",
    "last_order",
    "neuron_means",
    "random_block_order",
    "random_order",
    "ScoringContext",
    "ScoringSettings",
    "uniform_order",
]
