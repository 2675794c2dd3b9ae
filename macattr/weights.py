"""Weights files as people have them: BasicSR/RAM checkpoints, DataParallel prefixes, files that do not fit.

[`load_weights()`][macattr.weights.load_weights] reads a state dict with ``torch.load(weights_only=True)`` (a file
that holds code is refused) and loads it into a model:

- a file that wraps the state dict under a key (BasicSR's ``params`` and ``params_ema``, ``state_dict``,
  ``model``, ``net_g``), also twice (``{"state_dict": {"model": ...}}``), is unwrapped; with a choice, ``params``
  is taken (as RAM's analysis configuration reads it) and a note says which key was used and which others are
  there; ``key=`` picks one, at the top or one wrapper down, or a dotted path (``"state_dict.model"``);
- ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped, in any order and
  nesting (``_orig_mod.module.``), with a note;
- keys that do not fit are named, the first missing and unexpected ones with their counts; ``strict=False``
  loads the rest and lists what was left out, but a file none of whose tensors fit is refused either way;
- nothing is loaded unless every value to load is a tensor of the model's shape: a failure leaves the model as
  it was.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from macattr.files import PathLike

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "net_g")
"""Keys under which checkpoints keep their state dict, in the order one is chosen."""
_PREFIXES = ("module.", "_orig_mod.")


def _note(text: str) -> None:
    """A UserWarning attributed to the first caller outside this module."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(text, UserWarning, stacklevel=level)


def read_state(path: PathLike, key: Optional[str] = None, note: Callable[[str], None] = _note) -> Dict[str, Any]:
    """The state dict in the file ``path`` (unwrapped and without DataParallel or compile prefixes); ``note``
    hears which wrapper key was used and what was stripped.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pth")
        >>> torch.save({"params": {"module.w": torch.ones(1)}, "params_ema": {"module.w": torch.zeros(1)}}, path)
        >>> notes = []
        >>> read_state(path, note=notes.append)
        {'w': tensor([1.])}
        >>> notes[0].split("; ")[1:]
        ["loaded params (as RAM's configuration does", "key='params_ema' for the others)"]
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"weights file {path} is a folder; pass the file inside it")
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load weights {path} (read with weights_only=True, so files that hold code or "
                         f"objects other than tensors are refused): {first}") from None  # fmt: skip
    if not isinstance(state, dict):
        raise ValueError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    state = _unwrapped(state, key, path, note)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                note(f"weights {path}: the prefix {prefix!r} of every key was stripped")
                stripped = True
    return state


def _unwrapped(state: Dict[str, Any], key: Optional[str], path: Path, note: Callable[[str], None]) -> Dict[str, Any]:
    """The state dict inside ``state``: under ``key`` (a dotted path, looked up at the top or one wrapper down),
    else under the first of ``WRAPPER_KEYS`` it has, again while a wrapper holds only wrappers."""
    if key is not None:
        parts, level = key.split("."), state
        if parts[0] not in level:
            inner = [k for k in WRAPPER_KEYS if isinstance(state.get(k), dict)]
            level = state[inner[0]] if inner else level
        for part in parts:
            if not isinstance(level, dict) or not isinstance(level.get(part), dict):
                raise ValueError(f"weights {path} have no state dict under key {key!r}; their keys are "
                                 f"{list(state)[:10]}")  # fmt: skip
            level = level[part]
        return level
    while True:
        wrappers = [k for k in WRAPPER_KEYS if isinstance(state.get(k), dict)]
        if not wrappers or any(isinstance(v, torch.Tensor) for v in state.values()):
            return state
        if len(wrappers) > 1:
            others = ", ".join(repr(k) for k in wrappers[1:])
            note(f"weights {path} hold {' and '.join(wrappers)}; loaded {wrappers[0]} (as RAM's configuration does; "
                 f"key={others} for the others)")  # fmt: skip
        state = state[wrappers[0]]


def load_weights(
    model: nn.Module,
    path: PathLike,
    key: Optional[str] = None,
    strict: bool = True,
    note: Callable[[str], None] = _note,
) -> nn.Module:
    """Load the weights file ``path`` into ``model`` (see the module text); returns the model.

    ``strict=False`` loads the tensors that fit and notes what was left out; a tensor whose shape differs from
    the model's is an error either way. Every failure is a ``ValueError`` naming the file.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pth")
        >>> torch.save({"params": nn.Linear(2, 2).state_dict()}, path)  # BasicSR's layout
        >>> load_weights(nn.Linear(2, 2), path)
        Linear(in_features=2, out_features=2, bias=True)
        >>> load_weights(nn.Linear(2, 3), path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: weights ... do not fit the model: tensor 'weight' is (2, 2) in the file, (3, 2) in the model...
    """
    state = read_state(path, key, note)
    own = model.state_dict()
    odd = [k for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    if odd:
        raise ValueError(f"weights {path} hold {type(state[odd[0]]).__name__} values, not tensors, under the "
                         f"model's keys ({_listed(odd, 'such')}); nothing was loaded")  # fmt: skip
    nested = [str(k) for k, v in state.items() if isinstance(v, dict) and k not in own]
    pick = f"key= (--weights-key) to load one of the state dicts it holds ({', '.join(nested[:5])}), or " \
        if nested else ""  # fmt: skip
    if own and not any(k in state for k in own):
        raise ValueError(f"weights {path} do not fit the model: none of the file's {len(state)} entries is one of "
                         f"the model's {len(own)} tensors (the file's first: {', '.join(map(str, list(state)[:3]))}; "
                         f"the model's first: {', '.join(list(own)[:3])}); pass {pick or 'the weights of this '}"
                         f"{'another file' if pick else 'network'}")  # fmt: skip
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if misshapen:
        first = misshapen[0]
        raise ValueError(f"weights {path} do not fit the model: tensor {first!r} is {tuple(state[first].shape)} in "
                         f"the file, {tuple(own[first].shape)} in the model ({len(misshapen)} tensor(s) differ in "
                         "shape); is it another network or another size of it?")  # fmt: skip
    if (missing or unexpected) and strict:
        raise ValueError(f"weights {path} do not fit the model: {_listed(missing, 'missing')}, "
                         f"{_listed(unexpected, 'unexpected')}; pass {pick}strict=False (--non-strict) to load the "
                         "tensors that fit")  # fmt: skip
    if missing or unexpected:
        note(f"weights {path}: loaded {len(own) - len(missing)} of the model's {len(own)} tensors; left out "
             f"{_listed(missing, 'missing')}, {_listed(unexpected, 'unexpected')}")  # fmt: skip
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model


def _listed(keys: List[str], what: str) -> str:
    """``3 missing (first: a, b, c)``."""
    if not keys:
        return f"0 {what}"
    return f"{len(keys)} {what} (first: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"


__all__ = ["WRAPPER_KEYS", "load_weights", "read_state"]
