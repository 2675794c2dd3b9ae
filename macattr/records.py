"""Settings as JSON records: what a scores file, a checkpoint or a pipeline's file writes down, and compares
before it resumes or reuses work.

A record holds only JSON values ([`json_value()`][macattr.records.json_value]): tensors are recorded by shape
and a fingerprint of their values, infinities as ``"inf"``, tuples as lists, dataclasses as their fields.
[`differences()`][macattr.records.differences] names what changed between two records, key by key, so that a
refusal to resume says why; [`write_record()`][macattr.records.write_record] and
[`read_record()`][macattr.records.read_record] keep one beside a file, written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from macattr.files import PathLike, write_text_atomic
from macattr.placement import is_dtensor, weight_values


def tensor_fingerprint(tensor: Tensor) -> str:
    """A tensor as a record holds it: its shape and the first 16 hex digits of the SHA-256 of its bytes (of a
    sharded DTensor: its global shape, and the fingerprint of this process's shard).

    Examples:
        >>> tensor_fingerprint(torch.zeros(2, 3))
        'tensor(2, 3) sha256:9d908ecfb6b256de'
    """
    if is_dtensor(tensor):
        return f"shard of tensor{tuple(tensor.shape)}: {tensor_fingerprint(tensor.to_local())}"
    if tensor.is_meta:
        return f"meta tensor{tuple(tensor.shape)} without values"
    data = tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return f"tensor{tuple(tensor.shape)} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def model_digest(model: torch.nn.Module) -> Dict[str, str]:
    """Every parameter and buffer of ``model`` by name → its fingerprint: what a record compares to tell two sets
    of weights apart (a digest of the values, not of the names alone; offloaded weights read from accelerate's
    hooks).

    Examples:
        >>> layer = torch.nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.zero_()
        >>> model_digest(layer)
        {'weight': 'tensor(1, 2) sha256:af5570f5a1810b7a'}
    """
    return {name: tensor_fingerprint(t) for name, t in weight_values(model)}


def callable_identity(function: Any) -> str:
    """What tells two callables apart in a record: the qualified name, plus a digest of the code, its constants
    and the values it closes over (two lambdas share the name ``<lambda>`` but not their code), or of a module's
    weights.

    Examples:
        >>> a, b = (lambda out: out.sum()), (lambda out: out.mean())
        >>> callable_identity(a) == callable_identity(a), callable_identity(a) == callable_identity(b)
        (True, False)
    """
    name = getattr(function, "__qualname__", getattr(function, "__name__", type(function).__name__))
    parts: List[Any] = [getattr(function, "__module__", None), name]
    if isinstance(function, torch.nn.Module):
        parts.append(sorted(model_digest(function).items()))
    code = getattr(function, "__code__", None)
    if code is not None:
        parts += [code.co_code.hex(), json_value(list(code.co_consts)), code.co_names]
    cells = getattr(function, "__closure__", None) or ()
    parts.append([json_value(_cell_value(cell)) for cell in cells])
    return f"{name} sha256:{hashlib.sha256(repr(parts).encode()).hexdigest()[:16]}"


def _cell_value(cell: Any) -> Any:
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return None
    return callable_identity(value) if callable(value) and not isinstance(value, type) else value


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


def _flat(record: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(record, Mapping) or not record:
        return {prefix.rstrip("."): record} if prefix else {}
    flat: Dict[str, Any] = {}
    for key, value in record.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def differences(before: Any, now: Any) -> List[str]:
    """What changed from record ``before`` to record ``now``: ``"key.sub: old -> new"`` for every leaf that
    differs (nested records flattened, keys sorted); an empty list when they agree.

    Examples:
        >>> differences({"lr": 1e-3, "net": {"dim": 16}}, {"lr": 3e-3, "net": {"dim": 16}})
        ['lr: 0.001 -> 0.003']
    """
    old, new = _flat(json_value(before)), _flat(json_value(now))
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]  # fmt: skip


def record_path(path: PathLike) -> Path:
    """Where the settings record of ``path`` lives: ``name.settings.json`` beside it.

    Examples:
        >>> record_path("runs/pretrain/model.pt").as_posix()
        'runs/pretrain/model.settings.json'
    """
    path = Path(path)
    return path.with_name(path.stem + ".settings.json")


def write_record(path: PathLike, record: Any) -> Path:
    """Write the settings record of ``path`` (JSON, atomically) beside it; returns the record's path."""
    return write_text_atomic(record_path(path), json.dumps(json_value(record), indent=1) + "\n")


def read_record(path: PathLike) -> Optional[Any]:
    """The settings record of ``path``, ``None`` when it has none; a record that is not JSON is a
    ``ValueError`` naming it."""
    where = record_path(path)
    if not where.exists():
        return None
    try:
        return json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{where} is not a settings record (JSON); delete it to make {Path(path).name} anew") from None


__all__ = [
    "callable_identity",
    "differences",
    "json_value",
    "model_digest",
    "read_record",
    "record_path",
    "tensor_fingerprint",
    "write_record",
]
