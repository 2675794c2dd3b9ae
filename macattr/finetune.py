"""Freeze everything but the selected layers, for RAM-style fine-tuning.

Fine-tuning a candidate layer means training the parameters it owns directly
(``module.parameters(recurse=False)``), as in RAM: a block-level candidate that
owns only a scale or a bias (a ConvNeXt block's ``gamma``, a NAFNet block's
``beta``) trains just those, although its score measured the whole block.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Tuple

from torch import nn

from macattr._compiled import eager
from macattr.layers import own_parameters

_SMALL_SHARE = 0.01


@dataclass
class TrainableLayers:
    """What [`freeze_except()`][macattr.finetune.freeze_except] left trainable; iterate it to get the parameters
    for an optimizer.

    Attributes:
        names: the layers whose own parameters train.
        parameters: those parameters.
        trainable, total: parameter elements that train, and in the whole model.

    As a context manager it puts the previous ``requires_grad`` flags back on exit.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> trainable = freeze_except(model, ["1"])
        >>> trainable.trainable, trainable.total, round(trainable.fraction, 3)
        (10, 30, 0.333)
        >>> trainable.restore()
    """

    names: List[str]
    parameters: List[nn.Parameter]
    trainable: int
    total: int
    _previous: List[Tuple[nn.Parameter, bool]]

    @property
    def fraction(self) -> float:
        """Trainable share of all parameter elements, in [0, 1]."""
        return self.trainable / self.total if self.total else 0.0

    def __iter__(self) -> Iterator[nn.Parameter]:
        return iter(self.parameters)

    def __repr__(self) -> str:
        return (
            f"TrainableLayers({len(self.names)} layers, {self.trainable:,} of {self.total:,} parameters "
            f"trainable = {100 * self.fraction:.2f} %)"
        )

    def restore(self) -> None:
        """Put back the ``requires_grad`` flags found before freezing."""
        for parameter, flag in self._previous:
            parameter.requires_grad_(flag)

    def __enter__(self) -> TrainableLayers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()


def freeze_except(model: nn.Module, names: Iterable[str], recurse: bool = False) -> TrainableLayers:
    """Set ``requires_grad`` so that only the named layers' own parameters train.

    Args:
        model: the network.
        names: module names as in ``model.named_modules()`` (for example
            ``select_top_k``'s result). Each must own parameters directly, or
            hold some below it with ``recurse=True``.
        recurse: train every parameter below each named module (whole blocks
            of a transformer, say), not only the ones it owns directly.

    Returns:
        The trainable parameters with their count and share (``.fraction``);
        ``with freeze_except(...)`` restores the previous flags on exit.

    Warns:
        UserWarning: without ``recurse``, when a named layer owns under 1 % of
            the parameters of the modules below it: only its own parameters
            train, not its children's.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with freeze_except(model, ["2"]) as trainable:
        ...     [p.requires_grad for p in model.parameters()]
        [False, False, True, True]
        >>> [p.requires_grad for p in model.parameters()]  # flags restored
        [True, True, True, True]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(names, str):
        raise TypeError("names must be a list of module names, not one string")
    model = eager(model)  # a torch.compile'd model: names are its original module's, which shares its parameters
    names = list(names)
    modules = dict(model.named_modules())
    unknown = [n for n in names if not isinstance(n, str) or n not in modules]
    if unknown:
        raise ValueError(f"names holds {unknown!r}, which are not modules of the model (see named_modules())")
    if not isinstance(recurse, bool):
        raise TypeError(f"recurse must be True or False, got {recurse!r}")
    empty = [n for n in names if not _trained(modules[n], recurse)]
    if empty:
        where = "below them" if recurse else "of their own (recurse=True trains the parameters below a module)"
        raise ValueError(f"names holds {empty!r}, which own no parameters {where}")
    if not recurse:
        _warn_small_owners(modules, names)
    previous = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(p) for n in names for p in _trained(modules[n], recurse)}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
    parameters = [p for p in model.parameters() if id(p) in chosen]
    return TrainableLayers(
        names, parameters, sum(p.numel() for p in parameters), sum(p.numel() for p, _ in previous), previous
    )


def _trained(module: nn.Module, recurse: bool) -> List[nn.Parameter]:
    """What fine-tuning ``module`` trains: every parameter below it, or its own (with parametrised originals)."""
    return list(module.parameters()) if recurse else own_parameters(module)


def parameter_counts(model: nn.Module, names: Iterable[str]) -> Tuple[Dict[str, int], int]:
    """Per named layer, the parameter elements it owns (what fine-tuning it trains: ``freeze_except`` makes them
    trainable whether they are frozen now or not), and the model's parameter elements in all (the denominator
    of ``freeze_except``'s ``fraction``). A parameter frozen now counts like any other, so a budget in
    parameters is the share that fine-tuning the selection will train.

    Examples:
        >>> parameter_counts(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), ["1"])
        ({'1': 10}, 30)
    """
    model = eager(model)
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"names holds {unknown!r}, which are not modules of the model (see named_modules())")
    own = {n: sum(p.numel() for p in own_parameters(modules[n])) for n in names}
    return own, sum(p.numel() for p in model.parameters())


def _warn_small_owners(modules: dict, names: List[str]) -> None:
    small = []
    for name in names:
        own = sum(p.numel() for p in own_parameters(modules[name]))
        below = sum(p.numel() for p in modules[name].parameters())
        if own < _SMALL_SHARE * below:
            small.append(f"{name} ({own:,} of {below:,})")
    if small:
        warnings.warn(
            f"selected layers own under {_SMALL_SHARE:.0%} of the parameters below them: {', '.join(small)}; "
            "fine-tuning a layer trains only its own parameters, not its sub-modules' (name those to train them)",
            UserWarning,
            stacklevel=3,
        )


__all__ = [
    "TrainableLayers",
    "freeze_except",
    "parameter_counts",
]
