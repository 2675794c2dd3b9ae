"""Leave the user's model as it was found.

``preserved_state`` runs its body with every module in eval mode (or, with
``train_mode=True``, in the mode it was in) and puts back, also when the body
raises: each module's train/eval flag, each parameter's ``requires_grad`` and
``.grad``, and, in train mode, every buffer (BatchNorm's running statistics).
Nested inside another ``preserved_state`` it leaves the modules the outer one
already keeps to it, so a ranking saves and restores the model once, not once
per batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import FrozenSet, Iterable, Iterator, List, Optional

import torch
from torch import nn

from macattr.layers import own_parameters
from macattr.targets import ReducedModel


def model_of(forward_func: object) -> Optional[nn.Module]:
    """The network behind a forward function: the model a target wraps, a module, or a bound method's owner."""
    if isinstance(forward_func, ReducedModel) and isinstance(forward_func.model, nn.Module):
        return forward_func.model
    owner = forward_func if isinstance(forward_func, nn.Module) else getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def modules_of(forward_func: object) -> List[nn.Module]:
    """The modules a forward function is made of (its wrapper included): none when the model is unknown."""
    owner = forward_func if isinstance(forward_func, nn.Module) else model_of(forward_func)
    return list(owner.modules()) if owner is not None else []


_PRESERVED: ContextVar[FrozenSet[int]] = ContextVar("macattr_preserved_modules", default=frozenset())


@contextmanager
def preserved_state(modules: Iterable[nn.Module], train_mode: bool = False) -> Iterator[None]:
    """Eval mode inside (unless ``train_mode``); modes, ``requires_grad``, ``.grad`` and buffers restored on exit."""
    outer = _PRESERVED.get()
    modules = [m for m in dict.fromkeys(modules) if id(m) not in outer]
    parameters = list(dict.fromkeys(p for m in modules for p in own_parameters(m)))
    buffers = list(dict.fromkeys(b for m in modules for b in m.buffers(recurse=False))) if train_mode else []
    training = [m.training for m in modules]
    flags = [p.requires_grad for p in parameters]
    grads = [p.grad for p in parameters]
    with torch.no_grad():  # values too: a reentrant checkpoint's backward adds into existing .grad in place
        saved_grads = [None if g is None else g.clone() for g in grads]
        saved_buffers = [b.clone() for b in buffers]
    token = _PRESERVED.set(outer | {id(m) for m in modules})
    try:
        if not train_mode:
            for module in modules:
                module.training = False
        yield
    finally:
        _PRESERVED.reset(token)
        for module, mode in zip(modules, training):
            module.training = mode
        for parameter, flag, grad in zip(parameters, flags, grads):
            parameter.requires_grad_(flag)
            parameter.grad = grad
        with torch.no_grad():
            for grad, saved in zip(grads, saved_grads):
                if grad is not None:
                    grad.copy_(saved)
            for buffer, saved in zip(buffers, saved_buffers):
                buffer.copy_(saved)
