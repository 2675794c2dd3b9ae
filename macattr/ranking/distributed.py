"""Ranking across processes with ``torch.distributed``: which batches a process scores, one error protocol,
and one ``all_reduce`` of the sums.

Every process walks the same loader and scores the batches ``rank, rank + W, rank + 2W, …`` (W processes, no
image twice). All processes run the same sequence of collectives: one error check after every round of W
batches, one at the end, then one ``all_reduce`` of the per-layer sums and the image count. A process that
fails joins the next error check with its message, so every process stops within one batch and raises with the
first failing rank's message instead of waiting for a timeout. Before any scoring the processes check that they
hold the same model (a digest of every parameter and buffer, shard by shard for a sharded one): the sums of
different models would look like one model's scores.

A sharded model (FSDP2's ``fully_shard``: its parameters are DTensors) gathers its weights in every forward and
backward pass, so every process must run the same passes: ``Shard.lockstep``. Each round, every process says
at its own batch whether it has images to score (with the error check); if any has, every process runs one
sweep, a process without images on its batch's first row, the result thrown away; and the grid points per
pass are agreed (the smallest any process chose), so that every sweep has the same number of passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

import numpy as np
import torch

from macattr.accumulators import ScoreSum
from macattr.placement import is_dtensor, weight_values
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
    lockstep: bool = False

    def owns(self, batch_number: int) -> bool:
        """Whether this process scores batch ``batch_number`` of the loader (round-robin)."""
        return batch_number % self.world == self.rank

    def round_ends(self, batch_number: int) -> bool:
        """Whether batch ``batch_number`` closes a round of ``world`` batches (time for an error check)."""
        return self.world > 1 and batch_number % self.world == self.world - 1

    def check(self, error: Optional[BaseException] = None, has_work: bool = False) -> bool:
        """The error check every process runs at the same points: raise if any process failed; else return
        whether any process ``has_work`` (the lockstep's question for a round).

        The failing process re-raises its own error; the others raise ``RankFailed`` with the message of the
        lowest-numbered failing rank.
        """
        if self.world == 1:
            if error is not None:
                raise error
            return has_work
        import torch.distributed as dist

        flags = torch.tensor([error is not None, has_work], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if int(flags[0]) == 0:
            return bool(flags[1])
        message = None if error is None else f"{type(error).__name__}: {error}"
        messages = [None] * self.world
        dist.all_gather_object(messages, message)
        if error is not None:
            error.told_the_group = True  # type: ignore[attr-defined]
            raise error
        first = next(rank for rank, text in enumerate(messages) if text is not None)
        raise RankFailed(f"rank {first} of {self.world} failed: {messages[first]}")

    def guard(self, step: Callable[[], _T]) -> _T:
        """``step()``; if it raises, the others hear of it at their next error check (and so does this one),
        unless it came from an error check inside the step, which every process has run already."""
        try:
            return step()
        except RankFailed:
            raise
        except Exception as error:
            if not getattr(error, "told_the_group", False):
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

    def joins_last_round(self, batches: int) -> bool:
        """Under lockstep, whether this process owns no batch of the last round of ``batches`` (an incomplete
        round) and must still join its sweep."""
        return self.lockstep and self.rank >= batches % self.world > 0

    def agreed_steps_per_pass(self, steps: int) -> int:
        """The grid points per pass of a lockstep sweep: the fewest any process chose (one ``all_reduce``)."""
        if self.world == 1:
            return steps
        import torch.distributed as dist

        chosen = torch.tensor([steps], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(chosen, op=dist.ReduceOp.MIN)
        return int(chosen.item())

    def check_same_model(self, model: torch.nn.Module) -> None:
        """Refuse to rank when the processes hold different models: one collective gathering every process's
        digests of its parameters and buffers.

        A sharded tensor (a DTensor) is compared shard by shard: its global shape and placement must agree
        everywhere, and the processes that hold the same shard must hold the same values (with every mesh
        dimension sharded, each shard has one holder and only the layout is compared). Every process raises the
        same ``ValueError``, so none waits for the others.
        """
        if self.world == 1:
            return
        import torch.distributed as dist

        tensors = [(name, *_shard_digest(t)) for name, t in weight_values(model)]
        everyone: List[Any] = [None] * self.world
        dist.all_gather_object(everyone, tensors)
        found = _first_difference(everyone)
        if found is None:
            return
        rank, name = found
        raise ValueError(
            f"process {rank} of {self.world} holds another model than process 0: its tensor {name!r} "
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


def _shard_digest(tensor: torch.Tensor) -> Tuple[str, Tuple[Any, ...], str]:
    """A tensor's layout (shape and placement), which shard this process holds (its mesh coordinate on the
    sharded mesh dimensions, ``"*"`` on the replicated ones) and the digest of its local values."""
    if not is_dtensor(tensor):
        return f"tensor{tuple(tensor.shape)}", (), tensor_fingerprint(tensor)
    coordinate = tensor.device_mesh.get_coordinate() or []
    held = tuple(c if not placement.is_replicate() else "*" for c, placement in zip(coordinate, tensor.placements))
    layout = f"dtensor{tuple(tensor.shape)} {list(tensor.placements)} mesh{tuple(tensor.device_mesh.shape)}"
    return layout, held, tensor_fingerprint(tensor)


def _first_difference(everyone: List[List[Tuple[str, str, Tuple[Any, ...], str]]]) -> Optional[Tuple[int, str]]:
    """The first process and tensor that differ: another layout than process 0's, or other values than the
    first process that holds the same shard.

    Examples:
        >>> same = [("w", "dtensor(4,) [Shard(dim=0)] mesh(2,)", (r,), f"shard {r}") for r in range(2)]
        >>> _first_difference([[same[0]], [same[1]]]) is None  # each shard has one holder: nothing to compare
        True
        >>> _first_difference([[("b", "tensor(2,)", (), "x")], [("b", "tensor(2,)", (), "y")]])
        (1, 'b')
    """
    layouts = [(name, layout) for name, layout, _, _ in everyone[0]]
    holders: Dict[Tuple[str, Tuple[Any, ...]], str] = {}
    for rank, tensors in enumerate(everyone):
        if [(name, layout) for name, layout, _, _ in tensors] != layouts:
            theirs = dict((name, layout) for name, layout, _, _ in tensors)
            return rank, next((name for name, layout in layouts if theirs.get(name) != layout),
                              next(iter(theirs.keys() - dict(layouts).keys()), "?"))  # fmt: skip
        for name, _, held, digest in tensors:
            if holders.setdefault((name, held), digest) != digest:
                return rank, name
    return None


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


def leave_together() -> None:
    """Wait for every process of the group (if one was started) before they leave it: a process that destroys
    its Gloo group while another still holds it can abort that one at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


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
    "leave_together",
]
