"""What ``rank_layers`` reads from a loader: batch formats, groups, and which images it analyses.

A loader yields batches in any of these forms: a tensor (B, ...); a tuple or
list whose first item is the input tensor (and second, if a tensor, the ground
truth); or a dict with ``"lq"`` (BasicSR/RAM) or ``"input"``, and optionally
``"gt"``/``"target"``. [`analysed_batches()`][macattr.ranking.batches.analysed_batches] turns the stream of batches
into the images to analyse, each with its position in the stream and its index
among the analysed images (which seeds its pixel thresholds).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from macattr.seeds import derive_seed

Group = Union[None, str, Callable[[Any], Sequence[Hashable]]]


def batch_pair(batch: Any, need_target: Optional[str] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """(input, ground truth or None) of a batch; ``need_target``: the name of a method that needs the ground
    truth (a batch without it is refused, naming the method).

    Examples:
        >>> import torch
        >>> x, y = batch_pair({"lq": torch.zeros(2, 3), "gt": torch.ones(2, 3)})
        >>> x.shape, y.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    if isinstance(batch, Tensor):
        x, y = batch, None
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        x, y = batch[0], (batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None)
    elif isinstance(batch, Mapping) and ("lq" in batch or "input" in batch):
        x = batch["lq"] if "lq" in batch else batch["input"]
        y = batch.get("gt", batch.get("target"))
        y = y if isinstance(y, Tensor) else None
    else:
        raise TypeError(
            "a loader batch must be a tensor, a tuple/list whose first item is the input tensor, "
            f"or a dict with 'lq' or 'input'; got {type(batch).__name__}"
        )
    if not isinstance(x, Tensor) or x.dim() == 0:
        raise TypeError(f"a batch's input must be a tensor (B, ...), got {type(x).__name__}")
    if need_target and not isinstance(y, Tensor):
        raise TypeError(f"method={need_target!r} needs (input, ground truth) batches: (x, y) or {{'lq': x, 'gt': y}}")
    return x, y


def _group_keys(batch: Any, group: Group, size: int) -> List:
    """One group key per sample: from the batch's dict entry ``group``, or ``group(batch)``; ``None`` for no groups."""
    if group is None:
        return [None] * size
    if isinstance(group, str) and not (isinstance(batch, Mapping) and group in batch):
        found = sorted(map(str, batch)) if isinstance(batch, Mapping) else f"a {type(batch).__name__}, not a dict"
        raise ValueError(f"group={group!r} must be a key of each batch (a dict); this batch holds {found}")
    keys = batch[group] if isinstance(group, str) else group(batch)
    keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
    if len(keys) != size:
        raise ValueError(f"group must give one key per sample in the batch ({size}), got {len(keys)}")
    return keys


def source_keys(batch: Any, size: int) -> List[str]:
    """Each sample's source image, from a dict batch's ``"source"`` entry (one per sample; the restoration
    loaders set it: the clean photograph a degraded image was made from); ``""`` (unknown, every sample its own
    source) otherwise. The bootstrap of ``LayerScores.confidence()`` resamples sources, not images.

    Examples:
        >>> source_keys({"lq": torch.zeros(2, 3), "source": ["a.png", "b.png"]}, 2), source_keys(torch.zeros(2), 2)
        (['a.png', 'b.png'], ['', ''])
    """
    if not isinstance(batch, Mapping) or "source" not in batch:
        return [""] * size
    keys = batch["source"]
    keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
    if len(keys) != size:
        raise ValueError(f"a batch's 'source' must give one source per sample ({size}), got {len(keys)}")
    return [str(k) for k in keys]


def image_seed(seed: int, index: int) -> int:
    """The threshold seed of analysed image ``index``: independent of batch size and batch position.

    Examples:
        >>> image_seed(0, 5) == image_seed(0, 5) != image_seed(0, 6)
        True
    """
    return derive_seed(seed, index)


def fingerprint(previous: str, sample: Tensor) -> str:
    """A running SHA-256 over the samples of a stream: ``previous`` digest (hex) and one more sample.

    Examples:
        >>> a = fingerprint("", torch.zeros(3))
        >>> a == fingerprint("", torch.zeros(3)), a == fingerprint("", torch.ones(3))
        (True, False)
    """
    data = sample.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(previous.encode() + hashlib.sha256(data).digest()).hexdigest()


@dataclass
class Selected:
    """The samples of one batch that are analysed.

    number: the batch's position in the loader (0, 1, ...); first_sample: the
    stream position of its first sample; x, y: the whole batch's input and
    ground truth; keep: indices in the batch of the analysed samples, with
    ``indices`` their indices among all analysed images and ``groups`` their
    group labels (``""`` without groups); revisited: indices in the batch of
    the samples an earlier round of the same stream analysed; raw: the batch as
    the loader gave it; sources: each kept sample's source (see ``source_keys``).

    Examples:
        >>> selected = next(analysed_batches([torch.rand(2, 3)], None, Selection(None, None), need_target=None))
        >>> selected.keep, selected.indices
        ([0, 1], [0, 1])
    """

    number: int
    first_sample: int
    x: Tensor
    y: Optional[Tensor]
    keep: List[int]
    indices: List[int]
    groups: List[str]
    revisited: List[int] = field(default_factory=list)
    raw: Any = None  # the loader's batch as it came (for forward_kwargs taken from it)
    sources: List[str] = field(default_factory=list)  # per kept sample: its source image ("" when unknown)


@dataclass
class Selection:
    """Which samples of the stream are analysed: the first ``per_group`` of each group, at most ``max_images``
    in all, leaving out the first ``earlier`` of each group (analysed by an earlier round of the same stream).

    ``analysed`` counts the analysed images (those of earlier rounds included: it numbers the next one);
    ``revisited`` holds, after each ``choose``, the samples that an earlier round analysed.

    Examples:
        >>> selection = Selection(per_group=1, max_images=None)
        >>> selection.choose(["noise", "noise", "blur"])  # the first image of each group
        [0, 2]
        >>> again = Selection(per_group=2, max_images=None, earlier=1, analysed=2)  # the next round: one more each
        >>> again.choose(["noise", "noise", "blur"]), again.revisited
        ([1], [0, 2])
    """

    per_group: Optional[int]
    max_images: Optional[int]
    earlier: int = 0
    analysed: int = 0
    seen: Dict[str, int] = field(default_factory=dict)
    revisited: List[int] = field(default_factory=list)

    def choose(self, keys: List) -> List[int]:
        """Indices of the samples with these group keys to analyse; counts them in."""
        keep, self.revisited = [], []
        for index, key in enumerate(keys):
            name = json.dumps(key, default=str)
            seen = self.seen.get(name, 0)
            if self.per_group is not None and seen >= self.per_group:
                continue
            if self.max_images is not None and self.analysed + len(keep) >= self.max_images:
                continue
            self.seen[name] = seen + 1
            (self.revisited if seen < self.earlier else keep).append(index)
        return keep

    @property
    def done(self) -> bool:
        return self.max_images is not None and self.analysed >= self.max_images


def analysed_batches(
    loader: Iterable[Any], group: Group, selection: Selection, need_target: Optional[str]
) -> Iterator[Selected]:
    """Walk the loader and say, batch by batch, which samples are analysed; stops once ``max_images`` are chosen.

    The choice depends only on the stream of samples, never on how it is cut
    into batches or which process scores a batch.

    Examples:
        >>> batches = [{"lq": torch.rand(2, 3), "task": ["a", "b"]}, {"lq": torch.rand(2, 3), "task": ["a", "b"]}]
        >>> [s.keep for s in analysed_batches(batches, "task", Selection(1, None), need_target=None)]
        [[0, 1], []]
    """
    position = 0
    for number, batch in enumerate(loader):
        x, y = batch_pair(batch, need_target)
        keys = _group_keys(batch, group, x.shape[0])
        keep = selection.choose(keys)
        indices = list(range(selection.analysed, selection.analysed + len(keep)))
        selection.analysed += len(keep)
        labels = ["" if group is None else str(keys[i]) for i in keep]
        sources = source_keys(batch, x.shape[0])
        yield Selected(number, position, x, y, keep, indices, labels, selection.revisited, batch,
                       [sources[i] for i in keep])  # fmt: skip
        position += x.shape[0]
        if selection.done:
            return


__all__ = [
    "Group",
    "Selected",
    "Selection",
    "analysed_batches",
    "batch_pair",
    "fingerprint",
    "image_seed",
    "source_keys",
]
