"""One derivation of seeds: every stream of random numbers is named by a tuple of keys.

``derive_seed(0, "noise25", 3)`` and ``derive_seed(0, "noise52", 3)`` are unrelated seeds; so are
``derive_seed(1, 0)`` and ``derive_seed(0, 1)``. Integers enter NumPy's ``SeedSequence`` as they are (so
``derive_seed(seed, i)`` is the threshold seed of analysed image ``i``), strings by the first 8 bytes of their
SHA-256.
"""

from __future__ import annotations

import hashlib
import numbers
from typing import Union

import numpy as np
import torch

Key = Union[int, str]

__all__ = ["derive_seed", "seeded_generator"]


def _entropy(key: Key) -> int:
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
        raise ValueError(f"a seed key must be an integer >= 0 or a string, got {key!r}")
    return int(key)


def derive_seed(*keys: Key) -> int:
    """A 32-bit seed for the stream named by ``keys``.

    Examples:
        >>> derive_seed(0, 5) == derive_seed(0, 5) != derive_seed(5, 0)
        True
        >>> derive_seed(0, "noise25") != derive_seed(0, "noise52")
        True
    """
    if not keys:
        raise ValueError("derive_seed needs at least one key")
    return int(np.random.SeedSequence([_entropy(k) for k in keys]).generate_state(1)[0])


def seeded_generator(*keys: Key) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*keys)``.

    Examples:
        >>> a, b = (torch.rand(1, generator=seeded_generator(0, "a")) for _ in range(2))
        >>> bool(a == b)
        True
    """
    return torch.Generator().manual_seed(derive_seed(*keys))
