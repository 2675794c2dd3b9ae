"""Argument checks shared by the public functions.

Each check raises ``TypeError`` for a value of the wrong kind and ``ValueError``
for a value out of range, and the message names the argument and what it allows.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Sequence

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


def check_autograd_usable(modules: Iterable[torch.nn.Module]) -> None:
    """Refuse what makes gradients impossible before any work: ``torch.inference_mode()``, and parameters or
    buffers on the meta device (unless accelerate's hook loads them for each pass) or made under inference mode."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attribution needs autograd, which torch.inference_mode() switches off; call outside torch.inference_mode()"
        )
    from macattr.placement import offloaded_value

    for module in modules:
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            if tensor.is_meta and offloaded_value(module, name, tensor) is None:  # not loaded by accelerate's hook
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
