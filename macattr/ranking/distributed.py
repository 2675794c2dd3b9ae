"""Ranking across processes with ``torch.distributed``: which batches a process scores, one error protocol,
and one ``all_reduce`` of the sums.

Every process walks the same loader and scores the batches ``rank, rank + W, rank + 2W, …`` (W processes, no
padding, no image twice). All processes run the same sequence of collectives: one error check after every
round of W batches, one at the end, then one ``all_reduce`` of the per-layer sums and the image count. A
process that fails joins the next error check with its message, so every process stops within one batch and
raises with the first failing rank's message instead of waiting for a timeout. Before any scoring the processes
check that they hold the same model (a digest of every parameter and buffer): the sums of different models
would look like one model's scores.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Iterable, List, Optional, TypeVar

import numpy as np
import torch

from macattr.accumulators import ScoreSum
from macattr.records import tensor_fingerprint

DEFAULT_TIMEOUT = timedelta(minutes=10)
_T = TypeVar("_T")
_END = object()


class RankFailed(RuntimeError):
    """Another process of the group failed; its message is this error's."""


@dataclass(frozen=True)
class Shard:
    """This process's place in the group: ``rank`` of ``world`` processes (a single process: 0 of 1).

    Examples:
        >>> Shard(rank=1, world=2).owns(3), Shard(rank=1, world=2).owns(4), Shard().owns(4)
        (True, False, True)
    """

    rank: int = 0
    world: int = 1

    def owns(self, batch_number: int) -> bool:
        """Whether this process scores batch ``batch_number`` of the loader (round-robin)."""
        return batch_number % self.world == self.rank

    def round_ends(self, batch_number: int) -> bool:
        """Whether batch ``batch_number`` closes a round of ``world`` batches (time for an error check)."""
        return self.world > 1 and batch_number % self.world == self.world - 1

    def check(self, error: Optional[BaseException] = None) -> None:
        """The error check every process runs at the same points: raise if any process failed.

        The failing process re-raises its own error; the others raise ``RankFailed`` with the message of the
        lowest-numbered failing rank.
        """
        if self.world == 1:
            if error is not None:
                raise error
            return
        import torch.distributed as dist

        failed = torch.tensor([0 if error is None else 1], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(failed)
        if int(failed.item()) == 0:
            return
        message = None if error is None else f"{type(error).__name__}: {error}"
        messages = [None] * self.world
        dist.all_gather_object(messages, message)
        if error is not None:
            raise error
        first = next(rank for rank, text in enumerate(messages) if text is not None)
        raise RankFailed(f"rank {first} of {self.world} failed: {messages[first]}")

    def guard(self, step: Callable[[], _T]) -> _T:
        """``step()``; if it raises, the others hear of it at their next error check (and so does this one)."""
        try:
            return step()
        except Exception as error:
            self.check(error)  # raises: this error here, RankFailed in the others
            raise

    def run_rounds(self, items: Iterable[_T], work: Callable[[_T], int], finish: Callable[[], None]) -> None:
        """``work(item)`` for every item (it returns the item's batch number), then ``finish()``; an error check
        after every round of ``world`` batches and one at the end, so an error anywhere stops every process."""
        iterator = iter(items)
        while True:
            item = self.guard(lambda: next(iterator, _END))
            if item is _END:
                break
            number = self.guard(partial(work, item))
            if self.round_ends(number):
                self.check()
        self.guard(finish)
        self.check()

    def check_same_model(self, model: torch.nn.Module) -> None:
        """Refuse to rank when the processes hold different models: one collective over a digest of every
        parameter and buffer (a second one, on a mismatch, to name the first tensor that differs).

        Every process raises the same ``ValueError``, so none waits for the others.
        """
        if self.world == 1:
            return
        import torch.distributed as dist

        tensors = [(name, tensor_fingerprint(t)) for name, t in (*model.named_parameters(), *model.named_buffers())]
        mine = hashlib.sha256(repr(tensors).encode()).hexdigest()
        digests: List[Optional[str]] = [None] * self.world
        dist.all_gather_object(digests, mine)
        if len(set(digests)) == 1:
            return
        everyone: List[Any] = [None] * self.world
        dist.all_gather_object(everyone, tensors)
        first = next(rank for rank, digest in enumerate(digests) if digest != digests[0])
        theirs, ours = dict(everyone[first]), dict(everyone[0])
        differing = next((name for name, _ in everyone[0] if theirs.get(name) != ours[name]),
                         next(iter(theirs.keys() - ours.keys()), "?"))  # fmt: skip
        raise ValueError(
            f"process {first} of {self.world} holds another model than process 0: its tensor {differing!r} "
            "differs; load the same weights in every process (macattr rank --weights, or seed the model's "
            "construction: the command builds it under torch.manual_seed(--seed))"
        )

    def combine(self, total: ScoreSum) -> None:
        """Sum the per-layer sums and image counts of all processes into ``total`` (one ``all_reduce``), and
        gather every process's per-image scores, certificates and sources (one ``all_gather_object``)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        packed = torch.tensor([*total.sums.tolist(), float(total.images)], dtype=torch.float64,
                              device=_collective_device())  # fmt: skip
        dist.all_reduce(packed)
        values = packed.cpu().numpy()
        everyone: List[Any] = [None] * self.world
        dist.all_gather_object(everyone, (total.per_image, total.certified, total.sources))
        total.sums, total.images = np.asarray(values[:-1], dtype=np.float64), int(round(values[-1]))
        total.per_image = {index: row for rows, _, _ in everyone for index, row in rows.items()}
        total.certified = {index: row for _, rows, _ in everyone for index, row in rows.items()}
        total.sources = {index: source for _, _, sources in everyone for index, source in sources.items()}


def _collective_device() -> torch.device:
    """NCCL needs CUDA tensors; Gloo takes CPU tensors."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current_shard(distributed: Optional[bool]) -> Shard:
    """This process's shard: from the initialised process group (``distributed`` None or True), or a single
    process (``distributed=False``, or no group)."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if distributed and not initialised:
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group (start under torchrun and "
            "call torch.distributed.init_process_group, or use the macattr command, which does)"
        )
    if distributed is False or not initialised:
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size())


def init_from_environment(backend: Optional[str], device: Optional[str],
                          timeout: timedelta = DEFAULT_TIMEOUT) -> Optional[str]:  # fmt: skip
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), start the process group and return this
    process's device: ``cuda:LOCAL_RANK`` on GPUs, else ``device``. Without torchrun, return ``device``.

    ``backend``: "nccl" or "gloo"; default NCCL when the device is CUDA, Gloo otherwise. Collectives time out
    after ``timeout`` (10 minutes): a process that vanishes cannot hang the others for longer.
    """
    import torch.distributed as dist

    if backend is not None and backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    on_gpu = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
    if backend == "nccl" and not on_gpu:
        raise ValueError(f"backend 'nccl' needs CUDA devices; with device={device!r} use 'gloo'")
    backend = backend or ("nccl" if on_gpu else "gloo")
    if on_gpu:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend, timeout=timeout)
    return device


def is_main_process() -> bool:
    """True outside a process group, and for rank 0 inside one: the process that writes files and prints."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def finish() -> None:
    """Leave the process group if one was started."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DEFAULT_TIMEOUT",
    "RankFailed",
    "Shard",
    "current_shard",
    "finish",
    "init_from_environment",
    "is_main_process",
]
