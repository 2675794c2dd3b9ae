"""Argument checks shared by the public functions.

Each check raises ``TypeError`` for a value of the wrong kind and ``ValueError``
for a value out of range, and the message names the argument and what it allows.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Sequence, Tuple

import torch


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number inside the interval."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in {interval}, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor that holds NaN or Inf."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or Inf values")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_model_usable(named_modules: Iterable[Tuple[str, torch.nn.Module]]) -> None:
    """Refuse before any work what makes gradients impossible or meaningless: ``torch.inference_mode()``, and
    parameters or buffers on the meta device (unless accelerate's hook loads them for each pass), made under
    inference mode, or holding NaN (a parameter: or Inf), through which every attribution is not a number."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attribution needs autograd, which torch.inference_mode() switches off; call outside torch.inference_mode()"
        )
    from macattr.placement import offloaded_value

    for prefix, module in named_modules:
        parameters = [(own_name, tensor, False) for own_name, tensor in module.named_parameters(recurse=False)]
        buffers = [(own_name, tensor, True) for own_name, tensor in module.named_buffers(recurse=False)]
        for own_name, tensor, is_buffer in parameters + buffers:
            name = f"{prefix}.{own_name}" if prefix else own_name
            if tensor.is_meta and offloaded_value(module, own_name, tensor) is None:  # not loaded by accelerate's hook
                raise ValueError(
                    f"the model's tensor {name!r} ({type(module).__name__}) is on the meta device, without values; "
                    "load the weights first (model.to_empty(device=...) then load_state_dict, or "
                    "from_pretrained without device_map='meta')"
                )
            if tensor.is_inference():
                raise ValueError(
                    f"the model's tensor {name!r} ({type(module).__name__}) was made under torch.inference_mode(), "
                    "so autograd cannot use it; build or load the model outside torch.inference_mode()"
                )
            bad = _invalid_values(tensor, allow_inf=is_buffer)
            if bad:
                raise ValueError(
                    f"the model's tensor {name!r} ({type(module).__name__}) holds {bad} NaN or Inf values of "
                    f"{tensor.numel()}: any attribution that passes through it is not a number; load weights that "
                    "are finite (a diverged training run or a failed conversion leaves such values), or delete the "
                    "module if the forward pass never uses it"
                )


def _invalid_values(tensor: torch.Tensor, allow_inf: bool) -> int:
    """How many values of ``tensor`` are NaN (or, unless ``allow_inf``, infinite; a buffer may hold an attention
    mask's -Inf); 0 for a tensor without values or of integers. A sharded tensor (DTensor) counts this process'
    part."""
    if tensor.is_meta or not tensor.is_floating_point():
        return 0
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    invalid = torch.isnan(local) if allow_inf else ~torch.isfinite(local)
    return int(invalid.sum())


def check_device(name: str, value: object) -> Optional[torch.device]:
    """``None``, or ``value`` as a ``torch.device`` that exists on this machine."""
    if value is None:
        return None
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must name a torch device such as 'cpu' or 'cuda:0', got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r}: no CUDA device is available on this machine; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}='mps': no MPS device is available on this machine; use 'cpu'")
    return device
