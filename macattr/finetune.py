"""Freeze everything but the selected layers, for RAM-style fine-tuning."""

from __future__ import annotations

from typing import Iterable, Iterator, List

from torch import nn


class TrainableLayers:
    """What :func:`freeze_except` left trainable; iterate it to get the parameters for an optimizer.

    As a context manager it puts the previous ``requires_grad`` flags back on exit.
    """

    def __init__(self, model: nn.Module, names: List[str]) -> None:
        self.names = names
        self._previous = [(p, p.requires_grad) for p in model.parameters()]
        modules = dict(model.named_modules())
        chosen = {id(p) for n in names for p in modules[n].parameters(recurse=False)}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in chosen)
        self.parameters = [p for p in model.parameters() if id(p) in chosen]
        self.trainable = sum(p.numel() for p in self.parameters)
        self.total = sum(p.numel() for p, _ in self._previous)

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


def freeze_except(model: nn.Module, names: Iterable[str]) -> TrainableLayers:
    """Set ``requires_grad`` so that only the named layers' own parameters train.

    names: module names as in ``model.named_modules()`` (for example
    ``select_top_k``'s result). Returns the trainable parameters with their
    count and share (``.fraction``); ``with freeze_except(...)`` restores the
    previous flags on exit.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(names, str):
        raise TypeError("names must be a list of module names, not one string")
    names = list(names)
    modules = dict(model.named_modules())
    unknown = [n for n in names if not isinstance(n, str) or n not in modules]
    if unknown:
        raise ValueError(f"names holds {unknown!r}, which are not modules of the model (see named_modules())")
    empty = [n for n in names if next(modules[n].parameters(recurse=False), None) is None]
    if empty:
        raise ValueError(f"names holds {empty!r}, which own no parameters to train")
    return TrainableLayers(model, names)
