"""The ranking methods: one record per method, and the table that holds them.

[`rank_layers()`][macattr.ranking.rank_layers], the plots, the ``macattr`` command, the RAM example and the
benchmarks all read this table, so a method is added in one place: a [`Method`][macattr.ranking.methods.Method]
record and its scorer, passed to [`register()`][macattr.ranking.methods.register].

A method does one of three things:

- scores images (``scorer``: a function of the [`ScoringContext`][macattr.ranking.scorers.ScoringContext] returning
  a scorer, one score per image and layer, summed over the images);
- scores the layers from their weights alone (``from_weights``: name → module in depth order → name → score);
- orders the layers without data (``order``: layer names in depth order and a seed → name → score).

Examples:
    >>> [m.name for m in methods()]  # doctest: +NORMALIZE_WHITESPACE
    ['mac', 'conductance', 'internal_influence', 'gradnorm', 'fisher', 'kappa', 'random', 'random_blocks',
     'uniform', 'last', 'first']
    >>> get_method("ig").name  # RAM's IG baseline is internal influence
    'internal_influence'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from torch import nn

from macattr.paths import IntegrationPath, LinearPath, MaskAttributionPath
from macattr.ranking import scorers
from macattr.ranking.scorers import ScoringContext
from macattr.vocabulary import BUILT_IN_METHODS


class PathSettings(Protocol):
    """What a method's default path is built from: the ranking's settings, of which it reads the mask options."""

    def mask_path(self) -> IntegrationPath: ...


@dataclass(frozen=True)
class Method:
    """One ranking method.

    Attributes:
        name: what ``rank_layers(..., method=name)``, ``RankSettings(method=name)`` and ``--method`` take.
        label: the method in figure titles and tables.
        score: what one layer's score is, for axis labels.
        scorer: builds the per-image scorer from a [`ScoringContext`][macattr.ranking.scorers.ScoringContext]
            (methods that read images).
        from_weights: the layers (name → module, in depth order) → scores, from their weights alone (methods that
            need no images: given a loader they use it only to order the layers by depth).
        order: layer names in depth order and a seed → scores (methods that need no images and no weights).
        needs_ground_truth: the batches must carry the clean image or label (``(x, y)``, ``{"lq", "gt"}``).
        default_path: the ranking's settings → the path the method integrates along unless ``path=`` is given
            (``None``: no path, and
            ``n_steps``, ``rule`` and ``baselines`` play no part).
        path_types: the path classes it accepts (empty: any [`IntegrationPath`][macattr.paths.IntegrationPath]).
        step_rule: the method sums conductance steps and takes the ``rule`` setting (left, right, trapezoid).
        random_draw: the scores are a draw from ``seed`` alone, not an order through depth (no warning without a
            loader; an ablation draws them again for every fine-tuning seed).
        tied_units: equal scores mark layers that are one unit, selected together and counted once (a
            conductance sum scores per-channel affine images of one output alike; random blocks give a block's
            layers one draw). Other methods' ties, such as equal weights copied into several layers, are not.
        aliases: other names that select it.
        summary: one line for the method tables of the docs and ``--help``.
    """

    name: str
    label: str
    score: str
    scorer: Optional[Callable[[ScoringContext], scorers.Scorer]] = None
    order: Optional[Callable[[List[str], int], Dict[str, float]]] = None
    from_weights: Optional[Callable[[Dict[str, nn.Module]], Dict[str, float]]] = None
    needs_ground_truth: bool = False
    default_path: Optional[Callable[[PathSettings], IntegrationPath]] = None
    path_types: Tuple[type, ...] = ()
    step_rule: bool = False
    random_draw: bool = False
    tied_units: bool = False
    aliases: Tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a method's name must be an identifier such as 'my_method', got {self.name!r}")
        if sum(kind is not None for kind in (self.scorer, self.from_weights, self.order)) != 1:
            raise ValueError(f"method {self.name!r} needs exactly one of scorer= (scores images), from_weights= "
                             "(scores weights) or order= (no data)")  # fmt: skip
        if self.step_rule and self.default_path is None:
            raise ValueError(f"method {self.name!r} takes a step rule, so it needs a default path")
        if self.random_draw and self.order is None:
            raise ValueError(f"method {self.name!r} is a random draw, so it needs order= (no data)")
        if self.scorer is None and (self.needs_ground_truth or self.default_path is not None):
            raise ValueError(f"method {self.name!r} scores layers without data: it cannot need ground truth or a path")

    @property
    def needs_loader(self) -> bool:
        """Whether the method reads images (else a loader only orders the layers by depth)."""
        return self.scorer is not None

    def scores_without_data(self, layers: Dict[str, nn.Module], seed: int) -> Dict[str, float]:
        """The scores of a method that reads no images: ``layers`` name → module in depth order (or in
        registration order without a loader)."""
        if self.from_weights is not None:
            return self.from_weights(layers)
        if self.order is None:
            raise ValueError(f"method {self.name!r} scores images: it needs a loader")
        return self.order(list(layers), seed)

    @property
    def uses_path(self) -> bool:
        """Whether the method integrates along a path (``path``, ``n_steps``, ``rule`` and ``baselines`` matter)."""
        return self.default_path is not None


_TABLE: Dict[str, Method] = {}
_ALIASES: Dict[str, str] = {}


def register(method: Method, replace: bool = False) -> Method:
    """Add ``method`` to the table (``replace=True`` to change an existing entry); returns it.

    Examples:
        >>> from macattr.ranking.scorers import last_order
        >>> register(Method("middle_out", "middle out", "middle-out order",
        ...                 order=lambda names, seed: last_order(names[len(names) // 2:] + names[:len(names) // 2],
        ...                                                      seed)))  # doctest: +ELLIPSIS
        Method(name='middle_out', ...)
        >>> get_method("middle_out").needs_loader
        False
        >>> unregister("middle_out")
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be a Method record, got {type(method).__name__}")
    taken = [n for n in (method.name, *method.aliases) if (n in _TABLE or n in _ALIASES) and not replace]
    if taken:
        raise ValueError(f"method name {taken[0]!r} is taken; pass replace=True to change its entry")
    _TABLE[method.name] = method
    _ALIASES.update({alias: method.name for alias in method.aliases})
    return method


def unregister(name: str) -> None:
    """Remove the method ``name`` (and its aliases) from the table."""
    method = get_method(name)
    del _TABLE[method.name]
    for alias in method.aliases:
        _ALIASES.pop(alias, None)


def get_method(name: str) -> Method:
    """The record of method ``name`` (or of the method it is an alias of); a ``ValueError`` lists the names."""
    if isinstance(name, str) and name in _TABLE:
        return _TABLE[name]
    if isinstance(name, str) and name in _ALIASES:
        return _TABLE[_ALIASES[name]]
    raise ValueError(f"method must be one of {names(aliases=True)}, got {name!r}")


def methods() -> List[Method]:
    """Every method, in the order they were registered."""
    return list(_TABLE.values())


def names(aliases: bool = False) -> List[str]:
    """The methods' names (and their aliases after them, with ``aliases=True``)."""
    return [*_TABLE, *(_ALIASES if aliases else ())]


def label_of(name: str) -> str:
    """The figure label of method ``name``; an unknown name (a scores file of a method not registered here)
    is its own label."""
    try:
        return get_method(name).label
    except ValueError:
        return str(name)


def _mask_path(settings: PathSettings) -> IntegrationPath:
    return settings.mask_path()


def _linear_path(settings: PathSettings) -> IntegrationPath:
    return LinearPath()


_ATTRIBUTION = "sum over images of mean |attribution|"


def _built_in(name: str, label: str, score: str, **kind: Any) -> None:
    """Register the built-in method ``name`` with its summary and aliases from
    [`macattr.vocabulary`][macattr.vocabulary]."""
    entry = BUILT_IN_METHODS[name]
    register(Method(name, label, score, aliases=entry.aliases, summary=entry.summary, **kind))


_built_in("mac", "MAC", _ATTRIBUTION, scorer=scorers.attribution_scorer, default_path=_mask_path,
          path_types=(MaskAttributionPath,), step_rule=True, tied_units=True)  # fmt: skip
_built_in("conductance", "conductance", _ATTRIBUTION, scorer=scorers.attribution_scorer, default_path=_linear_path,
          step_rule=True, tied_units=True)  # fmt: skip
_built_in("internal_influence", "internal influence", "sum over images of mean |internal influence|",
          scorer=scorers.influence_scorer, default_path=_linear_path)  # fmt: skip
_built_in("gradnorm", "gradnorm", "sum over images of ‖∇θ L‖ / ‖θ‖", scorer=scorers.gradnorm_scorer,
          needs_ground_truth=True)  # fmt: skip
_built_in("fisher", "Fisher", "sum over images of mean (∂L/∂θ)²", scorer=scorers.fisher_scorer,
          needs_ground_truth=True)  # fmt: skip
_built_in("kappa", "condition number", "1 / condition number of the weights", from_weights=scorers.inverse_condition)
_built_in("random", "random", "random order", order=scorers.random_order, random_draw=True)
_built_in("random_blocks", "random blocks", "random order of blocks", order=scorers.random_block_order,
          random_draw=True, tied_units=True)  # fmt: skip
_built_in("uniform", "uniform", "uniform order", order=scorers.uniform_order)
_built_in("last", "last", "deepest-first order", order=scorers.last_order)
_built_in("first", "first", "shallowest-first order", order=scorers.first_order)

__all__ = [
    "Method",
    "PathSettings",
    "ScoringContext",
    "get_method",
    "label_of",
    "methods",
    "names",
    "register",
    "unregister",
]
