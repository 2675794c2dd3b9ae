"""Settings as JSON records: what a scores file or a checkpoint writes down, and compares on resume.

A record holds only JSON values; tensors are recorded by shape and a fingerprint of their values, infinities
as ``"inf"``, tuples as lists, dataclasses as their fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import torch
from torch import Tensor


def tensor_fingerprint(tensor: Tensor) -> str:
    """A tensor as a record holds it: its shape and the first 16 hex digits of the SHA-256 of its bytes.

    Examples:
        >>> tensor_fingerprint(torch.zeros(2, 3))
        'tensor(2, 3) sha256:9d908ecfb6b256de'
    """
    data = tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return f"tensor{tuple(tensor.shape)} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def json_value(value: Any) -> Any:
    """``value`` as a JSON value: numbers, strings, lists and dicts as they are, tensors as fingerprints,
    infinities as ``"inf"``, tuples as lists, dataclasses as ``{"type": name, field: value, ...}``, callables
    by name.

    Examples:
        >>> json_value((1, float("inf"), {"a": torch.ones(1)}))
        [1, 'inf', {'a': 'tensor(1,) sha256:e00e5eb9444182f3'}]
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, Tensor):
        return float(value) if value.dim() == 0 and value.is_floating_point() else tensor_fingerprint(value)
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, **fields}
    if callable(value):
        return getattr(value, "__qualname__", getattr(value, "__name__", type(value).__name__))
    return repr(value)
