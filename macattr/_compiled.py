"""Models made by ``torch.compile``: macattr attributes their original module.

A compiled module runs its layers inside compiled graphs, where module hooks do not fire, so no layer could be
captured. Its original module (``compiled._orig_mod``) shares the parameters and computes the same function in
eager mode, so attributing it gives the scores the eager model gives; names are those of the original module
(without the ``_orig_mod.`` prefix).
"""

from __future__ import annotations

import warnings

from torch import nn

from macattr.targets import ReducedModel


def is_compiled(module: object) -> bool:
    """Whether ``module`` is a ``torch.compile``'d module (an ``OptimizedModule`` around its original)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def eager(module: nn.Module, warn: bool = False, stacklevel: int = 3) -> nn.Module:
    """The original module of a compiled one (``module`` itself otherwise); says so once with ``warn``."""
    if not is_compiled(module):
        return module
    if warn:
        warnings.warn(
            "the model is torch.compile'd: macattr attributes its original module (model._orig_mod) in eager "
            "mode, since compiled graphs run no module hooks; scores and layer names are those of the original "
            "module, which shares the compiled model's parameters",
            UserWarning,
            stacklevel=stacklevel,
        )
    return module._orig_mod


def eager_forward(forward_func: object) -> object:
    """``forward_func`` with a compiled model replaced by its original: the compiled module itself, or the model
    inside a ``macattr.targets`` wrapper; other functions are returned as they are."""
    if isinstance(forward_func, ReducedModel) and is_compiled(forward_func.model):
        return ReducedModel(eager(forward_func.model, True, 5), forward_func.reduce, forward_func.name)
    if is_compiled(forward_func):
        return eager(forward_func, True, 5)
    return forward_func
