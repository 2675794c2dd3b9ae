"""From a ranking to a PEFT LoRA configuration: adapters on the chosen layers, optionally ranks by score.

``pip install macattr[peft]``. [`lora_config()`][macattr.peft.lora_config] takes a ranking
([`LayerScores`][macattr.scores.LayerScores], with ``k`` and ``budget`` as in ``top_k``) or a list of layer names
and the model PEFT will wrap, and returns a [`LoraSelection`][macattr.peft.LoraSelection]: a ``peft.LoraConfig``
whose ``target_modules`` are exactly the chosen layers LoRA can adapt, named relative to that model, and a report
of the chosen layers it cannot adapt (a LayerNorm, a bias-only module, ...), which are never dropped silently.

    import peft
    from macattr.peft import lora_config

    selection = lora_config(scores, model, k=0.1, r=8)       # or a list of names
    print(selection)                                           # targets, skipped layers and why
    model = peft.get_peft_model(model, selection.config)       # adapters on exactly those layers

- Names of a ranking made on a wrapper around the model (``OnEmbeddings(model)``: ``model.encoder.layer.0...``)
  are matched to the wrapped model by module identity (``ranked_model=``) or by their longest suffix that is a
  module of it.
- A selection of whole blocks of one ``ModuleList`` (``transformer.h.3``, ``transformer.h.7``) becomes
  ``layers_to_transform=[3, 7]`` with ``layers_pattern="h"`` and the block's adaptable layers as targets.
- Single layers are given to PEFT as one regular expression that matches each name whole
  (``target_modules="(?:0|1\\.0)"``): a list would also adapt every module whose name ends with a chosen name
  (``1.0`` for a chosen ``0``), as PEFT matches list entries by their ending.
- ``total_rank=R`` shares R ranks among the targets in proportion to their scores as ``rank_pattern``, with
  ``alpha_pattern`` keeping ``lora_alpha / r`` per layer; each target gets at least 1 and at most the largest
  rank its weight can use, min(fan-out, fan-in).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from torch import nn

from macattr._checks import check_int, check_real
from macattr.finetune import parameter_counts
from macattr.scores import LayerScores

ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layer types LoRA adapts (and Hugging Face's ``Conv1D``, GPT-2's projections, matched by name)."""


def adaptable(module: nn.Module) -> bool:
    """Whether LoRA can adapt ``module``: a Linear, Embedding, Conv1d/2d/3d or transformers' ``Conv1D``.

    Examples:
        >>> adaptable(nn.Linear(2, 2)), adaptable(nn.LayerNorm(2))
        (True, False)
    """
    return isinstance(module, ADAPTABLE) or type(module).__name__ == "Conv1D"


@dataclass
class LoraSelection:
    """What [`lora_config()`][macattr.peft.lora_config] made.

    Attributes:
        config: the ``peft.LoraConfig``.
        targets: the adapted layers, named relative to the model PEFT wraps, best first.
        skipped: chosen layers LoRA cannot adapt (name → why).
        ranks: each target's rank (``r`` for all, or its share of ``total_rank``).
        blocks: with a selection of whole blocks, their indices (``layers_to_transform``).
    """

    config: Any
    targets: List[str]
    skipped: Dict[str, str] = field(default_factory=dict)
    ranks: Dict[str, int] = field(default_factory=dict)
    blocks: Optional[List[int]] = None

    def __repr__(self) -> str:
        skipped = "; ".join(f"{name}: {why}" for name, why in self.skipped.items()) or "none"
        blocks = f", blocks {self.blocks}" if self.blocks is not None else ""
        return f"LoraSelection({len(self.targets)} targets{blocks}, ranks {sorted(set(self.ranks.values()))}; " \
               f"skipped: {skipped})"  # fmt: skip


def lora_config(
    selection: Union[LayerScores, Sequence[str]],
    model: nn.Module,
    k: Union[None, int, float] = None,
    *,
    budget: str = "layers",
    strategy: str = "greedy",
    ties: Optional[str] = None,
    among_adaptable: bool = False,
    r: int = 8,
    lora_alpha: Optional[int] = None,
    total_rank: Optional[int] = None,
    ranked_model: Optional[nn.Module] = None,
    **lora_options: Any,
) -> LoraSelection:
    """A ``peft.LoraConfig`` with adapters on the chosen layers of ``model`` (the model PEFT will wrap).

    Args:
        selection: a ranking, or the names of the layers to adapt (best first).
        model: the model given to ``peft.get_peft_model``.
        k: with a ranking, how many layers (``scores.top_k(k, budget)``); default: all its layers.
        budget: ``"layers"`` or ``"parameters"``, as in ``LayerScores.top_k``.
        strategy: how the top k fills the budget (``"greedy"``, ``"per_parameter"``, ``"knapsack"``,
            ``"blocks"``), as in ``LayerScores.top_k``.
        ties: tied layers taken ``"together"`` and counted once, or ``"apart"`` (default: the ranking's own),
            as in ``LayerScores.top_k``.
        among_adaptable: rank only the layers LoRA can adapt before taking the top k (by default the top k are
            taken first and the ones LoRA cannot adapt are reported in ``skipped``).
        r: LoRA's rank of every target (without ``total_rank``).
        lora_alpha: LoRA's scale (default ``r``).
        total_rank: share this many ranks among the targets in proportion to their scores (needs a ranking):
            at least 1 each, at most min(fan-out, fan-in) of the layer's weight; ranks no target can use are not
            spent.
        ranked_model: the model the ranking was made on, when it is not ``model`` (a wrapper around it): names
            are mapped by module identity.
        **lora_options: other ``peft.LoraConfig`` fields (``lora_dropout``, ``task_type``, ...).

    A block chosen beside single layers is adapted in each of its adaptable layers; with ``total_rank`` they share
    the block's score evenly, and a budget in parameters counts all of the block's parameters. ``fan_in_fan_out``
    is set for transformers' ``Conv1D`` layers (which store their weight transposed) when every adapted layer is
    one; a selection that mixes them with ``nn.Linear`` layers gets ``False``, and PEFT corrects it for each
    ``Conv1D`` layer with a warning.

    Examples:
        >>> import peft, torch
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        >>> scores = LayerScores({"0": 3.0, "1": 2.0, "2": 1.0}, "mac")
        >>> chosen = lora_config(scores, net, k=2, r=4)
        >>> chosen.targets, chosen.skipped
        (['0'], {'1': 'LayerNorm: LoRA adapts Linear, Embedding, Conv1d/2d/3d and transformers Conv1D layers'})
        >>> peft.get_peft_model(net, chosen.config).get_nb_trainable_parameters()  # A (4×4), B (8×4); all 122
        (48, 122)
    """
    import peft

    check_int("r", r, 1)
    if total_rank is not None:
        check_int("total_rank", total_rank, 1)
    if lora_alpha is not None:
        check_real("lora_alpha", lora_alpha, low=0.0, low_open=True)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be the nn.Module PEFT wraps, got {type(model).__name__}")
    modules = dict(model.named_modules())
    scores = selection if isinstance(selection, LayerScores) else None
    if scores is None and (k is not None or total_rank is not None or among_adaptable):
        raise ValueError("k=, total_rank= and among_adaptable= need a ranking (LayerScores), not a list of names")
    if isinstance(selection, str):
        raise TypeError("selection must be LayerScores or a list of names, not one string")
    mapped = _relative_names(list(scores.names if scores else selection), model, ranked_model)
    if scores is not None:
        ranking = _ranking_to_choose_from(scores, model, mapped, among_adaptable)
        every = [n for n, _ in ranking.ranked()]
        chosen = ranking.top_k(k, budget, strategy=strategy, ties=ties) if k is not None else every
    else:
        chosen = list(selection)
    names = [mapped[n] for n in chosen]
    blocks = _blocks(names, modules)
    skipped: Dict[str, str] = {}
    if blocks is not None:
        pattern, indices, leaves = blocks
        targets = leaves
        options = dict(layers_to_transform=indices, layers_pattern=pattern)
    else:
        options, sources = {}, {}  # sources: per target, the chosen layers it comes from and its share of each
        for name in names:
            module = modules[name]
            if adaptable(module):
                sources.setdefault(name, []).append((name, 1.0))
            elif _block(name, modules):  # a block among single layers: its adaptable layers, by name
                inner = [f"{name}.{n}" for n, m in module.named_modules() if n and adaptable(m)]
                for target in inner:
                    sources.setdefault(target, []).append((name, 1.0 / len(inner)))
            else:
                skipped[name] = f"{type(module).__name__}: LoRA adapts Linear, Embedding, Conv1d/2d/3d and " \
                                "transformers Conv1D layers"  # fmt: skip
        targets = list(sources)  # a layer chosen on its own and within its block is adapted once
    if skipped:
        warnings.warn(f"LoRA cannot adapt {len(skipped)} of the chosen layers: {', '.join(skipped)} (see "
                      "LoraSelection.skipped; among_adaptable=True ranks only the layers it can adapt)",
                      UserWarning, stacklevel=2)  # fmt: skip
    if not targets:
        raise ValueError(f"none of the chosen layers can take a LoRA adapter: {skipped}")
    alpha = r if lora_alpha is None else lora_alpha
    ranks = {t: r for t in targets}
    if total_rank is not None:
        if blocks is not None:
            raise ValueError("total_rank= shares ranks among single layers, not among whole blocks")
        inverse = {mapped[n]: n for n in chosen}
        shares = {t: sum(scores[inverse[name]] * part for name, part in sources[t]) for t in targets}
        ranks = _shared_ranks(shares, total_rank,
                              {t: _largest_rank(modules[t]) for t in targets})  # fmt: skip
        options.update(rank_pattern={_exact(t): q for t, q in ranks.items()},
                       alpha_pattern={_exact(t): alpha * q / r for t, q in ranks.items()})  # fmt: skip
    adapted = ([m for n in names for m in modules[n].modules() if adaptable(m)] if blocks is not None
               else [modules[t] for t in targets])  # fmt: skip
    conv1d_only = all(type(m).__name__ == "Conv1D" for m in adapted)  # transformers' Conv1D stores W transposed
    exact_names = "(?:" + "|".join(re.escape(t) for t in targets) + ")"  # PEFT matches a string whole
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets if blocks is not None else exact_names,
                             fan_in_fan_out=lora_options.pop("fan_in_fan_out", conv1d_only), **options,
                             **lora_options)  # fmt: skip
    return LoraSelection(config, targets, skipped, ranks, None if blocks is None else blocks[1])


def _ranking_to_choose_from(scores: LayerScores, model: nn.Module, mapped: Dict[str, str],
                            among_adaptable: bool) -> LayerScores:  # fmt: skip
    """``scores`` with their parameter counts (counted on ``model`` when they hold none), keeping only the layers
    LoRA can adapt (or blocks of them) under ``among_adaptable``."""
    modules = dict(model.named_modules())
    kept = {n: s for n, s in scores.items()
            if not among_adaptable or adaptable(modules[mapped[n]]) or _block(mapped[n], modules)}  # fmt: skip
    if scores.parameters is not None:
        parameters, total = {n: scores.parameters[n] for n in kept}, scores.model_parameters
    else:  # a block is adapted in every adaptable layer it holds: it counts all of its parameters
        sizes, total = parameter_counts(model, [mapped[n] for n in kept])
        parameters = {n: sum(p.numel() for p in modules[mapped[n]].parameters()) if _block(mapped[n], modules)
                      else sizes[mapped[n]] for n in kept}  # fmt: skip
    return LayerScores(kept, scores.method, scores.config, scores.images, parameters=parameters,
                       model_parameters=total)  # fmt: skip


def _exact(name: str) -> str:
    """A rank_pattern key that matches exactly the module ``name`` (PEFT matches keys as regular expressions)."""
    return f"^{re.escape(name)}$"


def _relative_names(names: List[str], model: nn.Module, ranked_model: Optional[nn.Module]) -> Dict[str, str]:
    """Each ranked layer's name in ``model``: by module identity in ``ranked_model``, else the name itself or
    its longest suffix that is a module of ``model``."""
    own = dict(model.named_modules())
    by_identity = {id(m): n for n, m in model.named_modules()}
    mapped = {}
    for name in names:
        if ranked_model is not None:
            module = dict(ranked_model.named_modules()).get(name)
            if module is None or id(module) not in by_identity:
                raise ValueError(f"layer {name!r} of the ranked model is not a module of the model PEFT wraps")
            mapped[name] = by_identity[id(module)]
            continue
        parts = name.split(".")
        suffix = next((".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in own), None)
        if suffix is None:
            raise ValueError(f"layer {name!r} is not a module of the model PEFT wraps, nor is any ending of its name "
                             "(pass ranked_model= to match layers by identity)")  # fmt: skip
        mapped[name] = suffix
    return mapped


def _block(name: str, modules: Dict[str, nn.Module]) -> bool:
    """Whether ``name`` is an element of a ModuleList (a transformer block) holding adaptable layers, and not
    itself one (a ModuleList of Linear layers holds layers, not blocks)."""
    parent, _, index = name.rpartition(".")
    return (
        index.isdigit()
        and isinstance(modules.get(parent), nn.ModuleList)
        and not adaptable(modules[name])
        and any(adaptable(m) for m in modules[name].modules())
    )


def _blocks(names: List[str], modules: Dict[str, nn.Module]) -> Optional[tuple]:
    """A selection of whole blocks of one ModuleList as (its attribute name, block indices, the blocks'
    adaptable layer names within a block); ``None`` for any other selection."""
    if not names or not all(_block(name, modules) for name in names):
        return None
    parents = {name.rpartition(".")[0] for name in names}
    if len(parents) != 1:
        return None
    parent = parents.pop()
    leaves = sorted({inner.rpartition(".")[2] for name in names for inner, m in modules[name].named_modules()
                     if inner and adaptable(m)})  # fmt: skip
    return parent.rpartition(".")[2], sorted(int(name.rpartition(".")[2]) for name in names), leaves


def _largest_rank(module: nn.Module) -> int:
    """The largest LoRA rank ``module``'s weight can use: min(fan-out, fan-in) (a higher rank adds nothing).

    Examples:
        >>> _largest_rank(nn.Linear(16, 3)), _largest_rank(nn.Conv2d(4, 32, 3)), _largest_rank(nn.Embedding(50, 8))
        (3, 32, 8)
    """
    weight = module.weight
    return min(weight.shape[0], weight[0].numel())


def _shared_ranks(scores: Dict[str, float], total: int, largest: Dict[str, int]) -> Dict[str, int]:
    """``total`` ranks shared in proportion to ``scores``, each between 1 and its ``largest`` rank.

    A target whose proportional share is above its largest rank is held there, then one whose share is below 1
    is held at 1, and the rest is shared again among the others until every share fits; the shares' fractions
    go by largest remainders. Ranks that no target can use are not spent.

    Examples:
        >>> _shared_ranks({"a": 9.0, "b": 1.0}, 10, {"a": 64, "b": 64})
        {'a': 9, 'b': 1}
        >>> _shared_ranks({"a": 0.673, "b": 0.25, "c": 0.077}, 24, {"a": 64, "b": 64, "c": 64})
        {'a': 16, 'b': 6, 'c': 2}
        >>> _shared_ranks({"a": 3.0, "b": 1.0}, 8, {"a": 2, "b": 64})  # a can use 2 ranks at most
        {'a': 2, 'b': 6}
    """
    if total < len(scores):
        raise ValueError(f"total_rank={total} cannot give each of the {len(scores)} targets a rank of 1")
    weights = {name: max(score, 0.0) for name, score in scores.items()}
    held: Dict[str, int] = {}
    exact: Dict[str, float] = {}
    while len(held) < len(weights):
        free = [name for name in weights if name not in held]
        spread, mass = total - sum(held.values()), sum(weights[name] for name in free)
        exact = {name: spread * (weights[name] / mass if mass > 0 else 1 / len(free)) for name in free}
        over = {name: largest[name] for name in free if exact[name] > largest[name]}
        under = {name: 1 for name in free if exact[name] < 1}
        if not over and not under:
            break
        held.update(over or under)
    else:
        exact = {}
    ranks = {**held, **{name: math.floor(v) for name, v in exact.items()}}
    left = total - sum(ranks.values()) if exact else 0
    for name in sorted(exact, key=lambda n: exact[n] - math.floor(exact[n]), reverse=True)[:left]:
        ranks[name] += 1
    return {name: ranks[name] for name in scores}


__all__ = ["ADAPTABLE", "LoraSelection", "adaptable", "lora_config"]
