"""Leave the user's model as it was found.

:func:`preserved_state` records, for every module reachable from a forward
function and the attributed layers, the train/eval flag of each module and the
``requires_grad`` flag and ``.grad`` of each parameter, and puts them back on
exit, also when the body raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, List

from torch import nn


def modules_of(forward_func: object) -> List[nn.Module]:
    """The modules a forward function is made of: itself if a module, or the owner of a bound method."""
    owner = forward_func if isinstance(forward_func, nn.Module) else getattr(forward_func, "__self__", None)
    return list(owner.modules()) if isinstance(owner, nn.Module) else []


@contextmanager
def preserved_state(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Restore train/eval mode, ``requires_grad`` and ``.grad`` of ``modules`` on exit."""
    modules = list(dict.fromkeys(modules))
    parameters = list(dict.fromkeys(p for m in modules for p in m.parameters(recurse=False)))
    training = [m.training for m in modules]
    flags = [p.requires_grad for p in parameters]
    grads = [p.grad for p in parameters]
    try:
        yield
    finally:
        for module, mode in zip(modules, training):
            module.training = mode
        for parameter, flag, grad in zip(parameters, flags, grads):
            parameter.requires_grad_(flag)
            parameter.grad = grad
