"""The memory one pass of a sweep takes above the model's weights, measured on a sweep's first pass.

A pass of ``S`` grid points of ``B`` images holds, until its backward pass frees them, what autograd saved for
backward and the layer outputs the hooks recorded: ``S`` times one grid point's worth (each storage counted once:
a layer output that the next operation saves is one tensor). The running sums of every recorded layer
([`macattr.accumulators`][macattr.accumulators]) are made at the first pass and kept to the end: per layer,
a few tensors the size of one grid point of its output, in the accumulation dtype (float32 for half
precision). While a layer's gradient is added to its sums, the pass briefly holds that gradient and the step's
temporaries, each the size of the layer's output: the largest layer sets this ``step_per_point`` (it matters
where one layer dwarfs the others, a language model's logits). So
``peak(S) = S · (activations_per_point + step_per_point) + sums``.

Examples:
    >>> memory = PassMemory(images=4, activations_per_point=3 * 2**20, sums=10 * 2**20, step_per_point=2**20)
    >>> memory.peak(steps=8) / 2**20  # 8 grid points of 3 + 1 MiB, and 10 MiB of sums
    42.0
    >>> print(memory.describe(steps=8))
    one pass of 4 images × 8 grid points ≈ 42.0 MiB above the weights (4.0 MiB per grid point,
    10.0 MiB of running sums)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from macattr.accumulators import accumulation_dtype


@dataclass(frozen=True)
class PassMemory:
    """The memory of one pass above the model's weights, in bytes.

    Attributes:
        images: the images (rows of the input) a pass holds.
        activations_per_point: what one grid point of them holds until the backward pass: autograd's saved
            tensors and the recorded layer outputs, each storage once.
        sums: the running sums of all recorded layers, held from the first pass to the end.
        step_per_point: what adding one grid point of the largest layer to its sums holds for a moment (its
            gradient and the step's temporaries).
    """

    images: int
    activations_per_point: int
    sums: int
    step_per_point: int = 0

    def peak(self, steps: int) -> int:
        """Bytes above the weights while a pass of ``steps`` grid points runs."""
        return steps * (self.activations_per_point + self.step_per_point) + self.sums

    def steps_within(self, budget: int, cap: int) -> int:
        """The most grid points (1 to ``cap``) whose pass holds at most ``budget`` bytes of activations (the
        sums are already made when this is asked).

        Examples:
            >>> PassMemory(1, activations_per_point=100, sums=50).steps_within(budget=1000, cap=64)
            10
        """
        per_point = self.activations_per_point + self.step_per_point
        if per_point <= 0:
            return cap
        return max(1, min(cap, budget // per_point))

    def describe(self, steps: int) -> str:
        """One line: the pass's images and grid points and what it holds."""
        images = f"{self.images} image{'s' if self.images != 1 else ''}"
        points = f"{steps} grid point{'s' if steps != 1 else ''}"
        return (f"one pass of {images} × {points} ≈ {_size(self.peak(steps))} above the "
                f"weights ({_size(self.activations_per_point + self.step_per_point)} per grid point, "
                f"{_size(self.sums)} of running "
                "sums)")  # fmt: skip


def _size(count: int) -> str:
    """Bytes in KiB below a MiB, in MiB below a GiB, else in GiB."""
    if count < 2**20:
        return f"{count / 2**10:.1f} KiB"
    return f"{count / 2**20:.1f} MiB" if count < 2**30 else f"{count / 2**30:.2f} GiB"


def _storage(tensor: Tensor) -> Tuple[int, int]:
    """A tensor's storage as (address, bytes): views of one storage are one entry."""
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):  # a tensor subclass without one storage
        return id(tensor), tensor.numel() * tensor.element_size()


class PassMeter:
    """Counts, while one pass runs inside it, the storages autograd saves for backward (parameters, frozen or not,
    their views, and other leaves that require grad left out: they are there before the pass) and the tensors given to
    ``hold``; ``memory`` then turns them into a
    [`PassMemory`][macattr.memory.PassMemory].

    Examples:
        >>> x = torch.rand(8, 4, requires_grad=True)
        >>> with PassMeter() as meter:
        ...     y = torch.tanh(x)  # tanh saves its output: 8 · 4 float32 values
        ...     meter.hold([y])  # the same storage: counted once
        >>> meter.memory(steps=2, images=4, sums=0).activations_per_point  # 128 bytes over 2 grid points
        64
    """

    def __init__(self) -> None:
        self._held: Dict[int, int] = {}
        self._hooks: Optional[torch.autograd.graph.saved_tensors_hooks] = None

    def __enter__(self) -> PassMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(*exc_info)
            self._hooks = None

    def _pack(self, tensor: Tensor) -> Tensor:
        base = tensor if tensor._base is None else tensor._base  # a weight's transpose is a view of it
        if not isinstance(base, torch.nn.Parameter) and not (base.is_leaf and base.requires_grad):
            self.hold([tensor])
        return tensor

    def hold(self, tensors: Iterable[Tensor]) -> None:
        """Count these tensors' storages too (once each)."""
        for tensor in tensors:
            address, size = _storage(tensor)
            self._held[address] = size

    def memory(self, steps: int, images: int, sums: int, step_per_point: int = 0) -> PassMemory:
        """What the counted pass of ``steps`` grid points of ``images`` images held, with ``sums`` bytes of
        running sums and ``step_per_point`` bytes of a step's temporaries per grid point."""
        return PassMemory(images, sum(self._held.values()) // steps, sums, step_per_point)


def accumulation_bytes(tensors: Iterable[Tensor], steps: int) -> List[int]:
    """Per tensor, the bytes of one of its ``steps`` grid points in the accumulation dtype (float32 for half
    precision): the size of one running sum of it.

    Examples:
        >>> accumulation_bytes([torch.zeros(2, 3, 5, dtype=torch.bfloat16)], steps=2)  # 15 float32 values
        [60]
    """
    return [(t.numel() // steps) * torch.empty((), dtype=accumulation_dtype(t.dtype)).element_size() for t in tensors]


__all__ = ["PassMemory", "PassMeter", "accumulation_bytes"]
