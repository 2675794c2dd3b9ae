"""Candidate layers, and the order in which a model runs them.

RAM's rule for candidates (the default): every module that directly owns
parameters ([`own_parameters()`][macattr.layers.own_parameters] is non-empty:
``parameters(recurse=False)``, and the originals of a parametrised weight such
as ``weight_norm``'s), named as in ``model.named_modules()``; the containers
of parametrisations are not layers of their own.
[`execution_order()`][macattr.layers.execution_order] records, with hooks
during one forward pass, the order in which modules start to run and how
often each runs: that order is a layer's *depth*.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from macattr._compiled import eager

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


def own_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The parameters ``module`` owns directly, with the originals of its parametrised tensors
    (``torch.nn.utils.parametrize``: ``weight_norm``'s ``original0`` and ``original1``), which fine-tuning the
    module trains.

    Examples:
        >>> from torch.nn.utils.parametrizations import weight_norm
        >>> [tuple(p.shape) for p in own_parameters(weight_norm(nn.Linear(3, 2)))]
        [(2,), (2, 1), (2, 3)]
    """
    from torch.nn.utils import parametrize

    own = list(module.parameters(recurse=False))
    if parametrize.is_parametrized(module):
        own += [p for p in module.parametrizations.parameters() if all(p is not q for q in own)]
    return own


def block_of(name: str) -> str:
    """The block a layer belongs to: its name up to the last numbered component before its own, the element of
    a ``ModuleList`` or ``Sequential`` of repeated blocks that holds it (a transformer layer, a Swin block);
    a layer in no numbered container is a block of its own.

    Examples:
        >>> block_of("model.layers.3.self_attn.q_proj"), block_of("layers.0.residual_group.blocks.2.attn.qkv")
        ('model.layers.3', 'layers.0.residual_group.blocks.2')
        >>> block_of("features.3"), block_of("conv_first")
        ('features.3', 'conv_first')
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a layer's name (a non-empty string), got {name!r}")
    parts = name.split(".")
    numbered = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    return ".".join(parts[: numbered[-1] + 1]) if numbered else name


def _inside_parametrization(name: str) -> bool:
    """Whether ``name`` is a parametrisation container or inside one (``conv.parametrizations.weight``)."""
    return ".parametrizations." in f".{name}." or name.startswith("parametrizations.")


def candidate_layers(
    model: nn.Module,
    layers: Optional[LayerSpecs] = None,
    exclude: Optional[LayerSpecs] = None,
) -> Dict[str, nn.Module]:
    """The layers to rank, name → module, in ``named_modules()`` (registration) order.

    Args:
        model: the network.
        layers: which modules to consider instead of the default (every module
            owning parameters directly): names, modules, compiled regular
            expressions (``re.compile(r"body\\.\\d+\\.conv1")``, matched against the
            whole name) or module types (``nn.Conv2d``), alone or in a list.
        exclude: the same kinds of specs; matching modules are dropped.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 3, 3))
        >>> list(candidate_layers(model))
        ['0', '2']
        >>> list(candidate_layers(model, exclude="0"))
        ['2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = eager(model)  # a torch.compile'd model: the layers of its original module
    named = [(name, module) for name, module in model.named_modules() if name and not _inside_parametrization(name)]
    if layers is None:
        chosen = [(n, m) for n, m in named if own_parameters(m)]
    else:
        specs = _check_specs("layers", layers)
        for spec in specs:
            if isinstance(spec, str) and spec not in dict(named):
                close = difflib.get_close_matches(spec, [n for n, _ in named], n=3)
                hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                raise ValueError(f"layers names {spec!r}, which is not a module of the model{hint}. Its sub-modules "
                                 f"are {_some_modules(named)} (named_modules())")  # fmt: skip
            if isinstance(spec, nn.Module) and not any(spec is m for _, m in named):
                raise ValueError(f"layers holds a {type(spec).__name__} that is not a sub-module of the model")
        chosen = [(n, m) for n, m in named if any(_matches(s, n, m) for s in specs)]
    if exclude is not None:
        drop = _check_specs("exclude", exclude)
        chosen = [(n, m) for n, m in chosen if not any(_matches(s, n, m) for s in drop)]
    if not chosen:
        raise ValueError(f"no candidate layers: the model has no sub-module matching layers= and exclude=; its "
                         f"sub-modules are {_some_modules(named)} (named_modules())")  # fmt: skip
    return dict(chosen)


def _some_modules(named: List[Tuple[str, nn.Module]], shown: int = 12) -> str:
    """The first ``shown`` sub-modules as "name (Type), ...", and how many more there are."""
    listed = ", ".join(f"{n} ({type(m).__name__})" for n, m in named[:shown]) or "none"
    return listed + (f" and {len(named) - shown} more" if len(named) > shown else "")


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


@dataclass(frozen=True)
class ExecutionOrder:
    """What one forward pass ran: module names in the order they started, how often each ran, and the first
    dimension of each one's (first floating-point) output.

    ``order`` holds every named sub-module that ran at least once; ``calls`` maps
    each of them to its number of calls in that pass; ``rows`` to its output's
    first dimension (absent when the output holds no floating-point tensor).

    Examples:
        >>> ExecutionOrder(["head", "tail"], {"head": 1, "tail": 1}).sort(["tail", "head", "unused"])
        ['head', 'tail']
    """

    order: List[str]
    calls: Dict[str, int]
    rows: Dict[str, int] = field(default_factory=dict)

    def sort(self, names: Iterable[str]) -> List[str]:
        """``names`` that ran, in execution order."""
        position = {name: index for index, name in enumerate(self.order)}
        return sorted((n for n in names if n in position), key=position.__getitem__)


def execution_order(model: nn.Module, run: Callable[[], Any]) -> ExecutionOrder:
    """Run ``run()`` (one forward pass through ``model``, without gradients) and record which modules ran.

    A module's place is when it *starts* (forward pre-hook), so a container
    comes before the layers inside it, as in ``named_modules()``. The hooks are
    removed afterwards, also when ``run`` raises.

    Examples:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.tail, self.head = nn.Linear(4, 2), nn.Linear(3, 4)  # registered tail first
        ...     def forward(self, x):
        ...         return self.tail(self.head(x))
        >>> net = Net()
        >>> execution_order(net, lambda: net(torch.rand(1, 3))).order
        ['head', 'tail']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    order: List[str] = []
    calls: Dict[str, int] = {}
    rows: Dict[str, int] = {}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if name not in calls:
                order.append(name)
            calls[name] = calls.get(name, 0) + 1

        return hook

    def rows_of(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            items = output if isinstance(output, (tuple, list)) else (output,)
            first = next((t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
            if first is not None and first.dim():
                rows.setdefault(name, first.shape[0])

        return hook

    named = [(name, module) for name, module in model.named_modules() if name]
    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in named]
    handles += [module.register_forward_hook(rows_of(name)) for name, module in named]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # a reentrant torch.utils.checkpoint warns that nothing requires grad here: true, and intended
            warnings.filterwarnings("ignore", message="None of the inputs have requires_grad", category=UserWarning)
            run()
    finally:
        for handle in handles:
            handle.remove()
    return ExecutionOrder(order, calls, rows)


__all__ = [
    "block_of",
    "ExecutionOrder",
    "LayerSpecs",
    "candidate_layers",
    "execution_order",
    "own_parameters",
]
