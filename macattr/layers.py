"""Candidate layers: which modules of a model are ranked.

RAM's rule (the default): every module that directly owns parameters
(``module.parameters(recurse=False)`` is non-empty), named as in
``model.named_modules()`` and kept in that order ("depth order").
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Union

from torch import nn

LayerSpec = Union[str, "re.Pattern[str]", type, nn.Module]
LayerSpecs = Union[LayerSpec, Iterable[LayerSpec]]


def _as_list(specs: LayerSpecs) -> list:
    if isinstance(specs, (str, re.Pattern, type, nn.Module)):
        return [specs]
    return list(specs)


def _matches(spec: LayerSpec, name: str, module: nn.Module) -> bool:
    if isinstance(spec, re.Pattern):
        return spec.fullmatch(name) is not None
    if isinstance(spec, str):
        return spec == name
    if isinstance(spec, type):
        return isinstance(module, spec)
    return spec is module


def candidate_layers(
    model: nn.Module,
    layers: Optional[LayerSpecs] = None,
    exclude: Optional[LayerSpecs] = None,
) -> Dict[str, nn.Module]:
    """The layers to rank, name → module, in ``named_modules()`` order.

    Args:
        model: the network.
        layers: which modules to consider instead of the default (every module
            owning parameters directly): names, modules, compiled regular
            expressions (``re.compile(r"body\\.\\d+\\.conv1")``, matched against the
            whole name) or module types (``nn.Conv2d``), alone or in a list.
        exclude: the same kinds of specs; matching modules are dropped.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    named = [(name, module) for name, module in model.named_modules() if name]
    if layers is None:
        chosen = [(n, m) for n, m in named if next(m.parameters(recurse=False), None) is not None]
    else:
        specs = _check_specs("layers", layers)
        for spec in specs:
            if isinstance(spec, str) and spec not in dict(named):
                raise ValueError(f"layers names {spec!r}, which is not a module of the model (see named_modules())")
            if isinstance(spec, nn.Module) and not any(spec is m for _, m in named):
                raise ValueError(f"layers holds a {type(spec).__name__} that is not a sub-module of the model")
        chosen = [(n, m) for n, m in named if any(_matches(s, n, m) for s in specs)]
    if exclude is not None:
        drop = _check_specs("exclude", exclude)
        chosen = [(n, m) for n, m in chosen if not any(_matches(s, n, m) for s in drop)]
    if not chosen:
        raise ValueError("no candidate layers: the model has no sub-module matching layers= and exclude=")
    return dict(chosen)


def _check_specs(name: str, specs: LayerSpecs) -> list:
    items = _as_list(specs)
    for spec in items:
        if not isinstance(spec, (str, re.Pattern, type, nn.Module)):
            raise TypeError(
                f"{name} must hold names, compiled regular expressions, module types or modules, "
                f"got {type(spec).__name__}"
            )
    if not items:
        raise ValueError(f"{name} must not be empty")
    return items
