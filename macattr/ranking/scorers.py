"""Per-image layer scores, one maker per family of methods.

A scorer takes the analysed images of a batch and returns a (B, L) tensor: one
score per image and layer. Attribution scorers (``mac``, ``ig``,
``conductance``) score a layer by the mean over its neurons of ``|attribution|``;
``gradnorm`` by the relative gradient norm of its own parameters. ``random``,
``uniform`` and ``last`` need no data
([`structural_scores()`][macattr.ranking.scorers.structural_scores]).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from macattr.attribution import LayerMAC, LayerPathConductance, LayerPathInternalInfluence
from macattr.ranking.batches import image_seed
from macattr.ranking.settings import RankSettings
from macattr.targets import TargetIndex

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


def attribution_scorer(
    settings: RankSettings, forward: Callable[..., Tensor], target: TargetIndex, layers: List[nn.Module]
) -> Scorer:
    """Mean |attribution| per layer for ``mac`` (thresholds of image ``i`` from ``(seed, i)``), ``ig`` or
    ``conductance`` along the linear path; all layers in one sweep per batch.

    Examples:
        >>> from macattr import targets
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> score = attribution_scorer(RankSettings(n_steps=8), targets.output_sum(model), None, [model[0], model[2]])
        >>> score(torch.rand(2, 3, 8, 8), None, [0, 1]).shape  # (images, layers)
        torch.Size([2, 2])
    """
    common = dict(target=target, n_steps=settings.n_steps, internal_batch_size=settings.internal_batch_size)
    if settings.method == "ig":
        ig = LayerPathInternalInfluence(forward, layers, train_mode=settings.train_mode)
        return lambda x, y, indices: neuron_means(ig.attribute(x, settings.baselines, **common), x.shape[0])
    if settings.method == "conductance":
        conductance = LayerPathConductance(forward, layers, train_mode=settings.train_mode)
        return lambda x, y, indices: neuron_means(conductance.attribute(x, settings.baselines, **common), x.shape[0])
    mac = LayerMAC(forward, layers, train_mode=settings.train_mode)

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Tensor:
        path = settings.mask_path(seeds=[image_seed(settings.seed, i) for i in indices])
        return neuron_means(mac.attribute(x, settings.baselines, **common, path=path), x.shape[0])

    return score


def gradnorm_scorer(model: nn.Module, layers: List[nn.Module], loss: Callable[[Tensor, Tensor], Tensor]) -> Scorer:
    """Per image, the relative gradient norm ``‖∇_θ L‖ / ‖θ‖`` of each layer's own parameters θ under ``loss``
    of (restored image, ground truth); the criterion of surgical fine-tuning (Lee et al., 2023).

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> score = gradnorm_scorer(model, [model[0], model[2]], lambda out, gt: (out - gt).abs().mean())
        >>> score(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), [0, 1]).shape
        torch.Size([2, 2])
    """
    params = [list(m.parameters(recurse=False)) for m in layers]
    if any(not p for p in params):
        raise ValueError("method='gradnorm' needs layers that own parameters")
    flat = [p for group in params for p in group]
    weight_norms = [math.sqrt(sum(float(p.detach().double().square().sum()) for p in group)) for group in params]

    def score(x: Tensor, y: Optional[Tensor], indices: List[int]) -> Tensor:
        rows = []
        for one_x, one_y in zip(x.split(1), y.split(1)):
            with torch.enable_grad():
                for p in flat:
                    p.requires_grad_(True)
                grads = torch.autograd.grad(loss(model(one_x), one_y), flat, allow_unused=True)
            by_id = {id(p): g for p, g in zip(flat, grads)}
            norms = [math.sqrt(sum(float(by_id[id(p)].double().square().sum()) for p in group
                                   if by_id[id(p)] is not None)) for group in params]  # fmt: skip
            rows.append([g / max(w, 1e-12) for g, w in zip(norms, weight_norms)])
        return torch.tensor(rows, dtype=torch.float64)

    return score


def _van_der_corput(i: int) -> float:
    """The i-th point of the base-2 van der Corput sequence: the bits of i mirrored behind the point."""
    position, base = 0.0, 0.5
    while i:
        position, i, base = position + base * (i & 1), i >> 1, base / 2
    return position


def structural_scores(method: str, names: List[str], seed: int) -> Dict[str, float]:
    """``random``: seeded uniform scores. ``uniform``: van der Corput order through depth (``names`` in depth
    order), so that every top-k is spread evenly. ``last``: the deepest layers first.

    Examples:
        >>> scores = structural_scores("uniform", [f"layer{i}" for i in range(8)], seed=0)
        >>> sorted(scores, key=scores.get, reverse=True)[:4]  # every top-k spread through depth
        ['layer4', 'layer2', 'layer6', 'layer1']
    """
    count = len(names)
    if method == "last":
        return {name: (index + 1) / count for index, name in enumerate(names)}
    if method == "random":
        values = torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        return dict(zip(names, values))
    # points i < 2^(m+1) with 2^m >= count land in every one of the count buckets of [0, 1)
    buckets = (int(_van_der_corput(i) * count) for i in range(1, 2 ** (count.bit_length() + 1)))
    rank_of = {index: rank for rank, index in enumerate(dict.fromkeys(buckets))}
    return {name: 1.0 - rank_of[index] / count for index, name in enumerate(names)}
