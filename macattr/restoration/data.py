"""Batches for training, analysis and testing, synthesised on photographs or read from paired data sets.

Every function here is a pure function of its arguments and seeds, so a run
that is interrupted and resumed sees the same data. Each draws from its own
named stream of its seed (``seeded_generator(seed, "test", task)``, ...): no two
tasks, steps or purposes share one.

- [`training_batch()`][macattr.restoration.data.training_batch]: random crops, each with a random training degradation.
- [`degraded_batches()`][macattr.restoration.data.degraded_batches]: the analysis batches ``rank_layers`` reads:
  ``{"lq", "gt", "task"}`` for every task of a set of clean images.
- [`synthetic_test_set()`][macattr.restoration.data.synthetic_test_set],
  [`paired_test_set()`][macattr.restoration.data.paired_test_set],
  [`evaluation_sets()`][macattr.restoration.data.evaluation_sets]:
  fixed test sets per task; paired sets are the user's SOTS/RESIDE, Rain100L,
  LOL or GoPro folders under a data root (``PAIRED_LAYOUTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from macattr.restoration.degradations import KINDS, STAND_IN_TASKS, degrade, degrade_task, random_level
from macattr.restoration.images import image_files, random_crop, read_image
from macattr.seeds import seeded_generator

# task → (low-quality folder, ground-truth folder) under a data root
PAIRED_LAYOUTS: Dict[str, Tuple[str, str]] = {
    "haze": ("SOTS/outdoor/hazy", "SOTS/outdoor/gt"),
    "rain": ("Rain100L/input", "Rain100L/target"),
    "lowlight": ("LOL/eval15/low", "LOL/eval15/high"),
    "motionblur": ("GoPro/test/blur", "GoPro/test/sharp"),
}


def training_batch(
    photos: Sequence[Tensor], size: int, batch: int, seed: int, step: int, stand_ins: bool = False
) -> Dict[str, Tensor]:
    """Batch ``step`` of training, ``{"lq", "gt"}`` (B, 3, size, size): random crops of ``photos``, each with a
    training degradation drawn from RAM's ranges (and the stand-ins, if asked). Depends only on (seed, step).

    Examples:
        >>> photos = [torch.rand(3, 40, 40)]
        >>> pair = training_batch(photos, size=16, batch=2, seed=0, step=3)
        >>> pair["lq"].shape, torch.equal(pair["lq"], training_batch(photos, 16, 2, 0, 3)["lq"])
        (torch.Size([2, 3, 16, 16]), True)
    """
    generator = seeded_generator(seed, "train", step)
    kinds = KINDS + (STAND_IN_TASKS if stand_ins else ())
    picks = torch.randint(len(photos), (batch,), generator=generator).tolist()
    clean = torch.stack([random_crop(photos[i], size, generator) for i in picks])
    lq = []
    for i, k in enumerate(torch.randint(len(kinds), (batch,), generator=generator).tolist()):
        one, kind = clean[i : i + 1], kinds[k]
        if kind in KINDS:
            lq.append(degrade(one, kind, random_level(kind, generator), generator))
        else:
            lq.append(degrade_task(one, kind, generator))
    return {"lq": torch.cat(lq), "gt": clean}


def fixed_crops(photos: Sequence[Tensor], size: int, count: int, seed: int) -> Tensor:
    """``count`` crops (count, 3, size, size), cycling through the photos, from a fixed seed.

    Examples:
        >>> fixed_crops([torch.rand(3, 40, 40)], size=16, count=3, seed=0).shape
        torch.Size([3, 3, 16, 16])
    """
    generator = seeded_generator(seed, "crops")
    return torch.stack([random_crop(photos[i % len(photos)], size, generator) for i in range(count)])


def degraded_batches(
    clean: Tensor, tasks: Sequence[str], seed: int, batch_size: Optional[int] = None,
    sources: Optional[Sequence[str]] = None,
) -> List[Dict[str, object]]:  # fmt: skip
    """For each task, the clean images (N, 3, H, W) degraded, in batches ``{"lq", "gt", "task", "source"}``.

    ``batch_size`` images per batch (default: all N of a task in one batch).
    ``task`` holds one name per image, for ``rank_layers(..., group="task")``; ``source`` the clean image each
    one was made from (``sources``, default its index), which the bootstrap of ``confidence()`` resamples: the
    same clean image under every task is one source.

    Examples:
        >>> batches = degraded_batches(torch.rand(2, 3, 32, 32), ["noise25", "blur2"], seed=0)
        >>> [(b["task"], b["source"], tuple(b["lq"].shape)) for b in batches]
        [(['noise25', 'noise25'], ['0', '1'], (2, 3, 32, 32)), (['blur2', 'blur2'], ['0', '1'], (2, 3, 32, 32))]
    """
    names = [str(i) for i in range(len(clean))] if sources is None else [str(s) for s in sources]
    if len(names) != len(clean):
        raise ValueError(f"sources must name each of the {len(clean)} clean images, got {len(names)}")
    size = batch_size or len(clean)
    batches = []
    for task in tasks:
        lq = degrade_task(clean, task, seeded_generator(seed, "degrade", task))
        for first in range(0, len(clean), size):
            rows = slice(first, first + size)
            batches.append({"lq": lq[rows], "gt": clean[rows], "task": [task] * len(lq[rows]), "source": names[rows]})
    return batches


def tiles(photos: Sequence[Tensor], size: int, min_std: float = 0.02) -> Tensor:
    """Every non-overlapping ``size × size`` tile of the photos (N, 3, size, size), leaving out flat tiles whose
    standard deviation is under ``min_std`` (on flat tiles PSNR is unbounded: a blur changes nothing).

    Examples:
        >>> photo = torch.zeros(3, 64, 96)
        >>> photo[:, :, 64:] = torch.rand(3, 64, 32)  # the right third textured, the rest flat
        >>> tiles([photo], 32).shape
        torch.Size([2, 3, 32, 32])
    """
    out = []
    for photo in photos:
        for top in range(0, photo.shape[-2] - size + 1, size):
            for left in range(0, photo.shape[-1] - size + 1, size):
                tile = photo[:, top : top + size, left : left + size]
                if float(tile.std()) >= min_std:
                    out.append(tile)
    if not out:
        raise ValueError(f"no {size} × {size} tile of the photos has a standard deviation of {min_std} or more")
    return torch.stack(out)


def synthetic_test_set(task: str, photos: Sequence[Tensor], size: int, seed: int) -> Dict[str, Tensor]:
    """A fixed test set ``{"lq", "gt"}`` for a synthetic task: every textured ``size × size`` tile of the
    photographs (see ``tiles``), degraded; the same tiles and noise for every run.

    Examples:
        >>> test = synthetic_test_set("blur2", [torch.rand(3, 64, 96)], size=32, seed=0)
        >>> test["lq"].shape
        torch.Size([6, 3, 32, 32])
    """
    clean = tiles(photos, size)
    generator = seeded_generator(seed, "test", task)
    return {"lq": degrade_task(clean, task, generator), "gt": clean}


def paired_test_set(root: Path, task: str, size: Optional[int], count: int) -> Optional[Dict[str, Tensor]]:
    """The user's paired images for ``task`` under ``root`` (``PAIRED_LAYOUTS``), centre-cropped to ``size``;
    None when the folders are absent. Ground truth is matched by file name, or by the name before the
    first "_" (SOTS names hazy images ``0001_0.8_0.2.jpg`` for ``0001.png``).

    Examples:
        >>> import tempfile
        >>> paired_test_set(Path(tempfile.mkdtemp()), "haze", size=64, count=4) is None  # no SOTS folders there
        True
    """
    lq_dir, gt_dir = (root / part for part in PAIRED_LAYOUTS[task])
    if not lq_dir.is_dir() or not gt_dir.is_dir():
        return None
    truth = {p.stem: p for p in image_files(gt_dir)}
    pairs = []
    for lq_file in image_files(lq_dir):
        gt_file = truth.get(lq_file.stem) or truth.get(lq_file.stem.split("_")[0])
        if gt_file is None:
            raise ValueError(f"{task}: no ground truth in {gt_dir} for {lq_file.name}")
        pairs.append((lq_file, gt_file))
    lq, gt = [], []
    for lq_file, gt_file in pairs[:count]:
        a, b = read_image(lq_file), read_image(gt_file)
        if a.shape != b.shape:
            raise ValueError(f"{task}: {lq_file.name} and {gt_file.name} differ in size")
        side = size or min(a.shape[-2:])
        top, left = (a.shape[-2] - side) // 2, (a.shape[-1] - side) // 2
        lq.append(a[:, top : top + side, left : left + side])
        gt.append(b[:, top : top + side, left : left + side])
    return {"lq": torch.stack(lq), "gt": torch.stack(gt)}


def evaluation_sets(
    tasks: Sequence[str], photos: Sequence[Tensor], data_root: Optional[Path], size: int, count: int, seed: int
) -> Tuple[Dict[str, Dict[str, Tensor]], List[str]]:
    """Test sets per task, and notes on what was stood in or skipped: synthetic tasks on every textured tile of
    ``photos``, paired tasks on up to ``count`` of the user's image pairs.

    Examples:
        >>> sets, notes = evaluation_sets(["noise25", "rain"], [torch.rand(3, 40, 40)], None, size=16, count=2, seed=0)
        >>> list(sets), notes
        (['noise25'], ['rain: skipped, no paired data at (no data root)'])
    """
    sets, notes = {}, []
    for task in tasks:
        if task in PAIRED_LAYOUTS:
            found = paired_test_set(data_root, task, size, count) if data_root else None
            if found is None:
                where = data_root / PAIRED_LAYOUTS[task][0] if data_root else "(no data root)"
                notes.append(f"{task}: skipped, no paired data at {where}")
            else:
                sets[task] = found
            continue
        sets[task] = synthetic_test_set(task, photos, size, seed)
        if task in STAND_IN_TASKS:
            notes.append(f"{task}: synthetic stand-in on bundled photographs, not the real data set")
    return sets, notes


def analysis_batches(
    tasks: Sequence[str], photos: Sequence[Tensor], data_root: Optional[Path], size: int, per_task: int, seed: int
) -> List[Dict[str, object]]:
    """One batch per task for the MAC analysis, with a "task" key: ``per_task`` crops of ``photos`` degraded
    (the user's paired images for paired tasks; tasks without data are left out), and a "source" key naming
    each crop's photograph (the same in every task).

    Examples:
        >>> photos = [torch.rand(3, 40, 40)]
        >>> batches = analysis_batches(["noise25", "jpeg50"], photos, None, size=16, per_task=2, seed=0)
        >>> [b["task"] for b in batches]
        [['noise25', 'noise25'], ['jpeg50', 'jpeg50']]
    """
    batches = []
    for task in tasks:
        if task in PAIRED_LAYOUTS:
            found = paired_test_set(data_root, task, size, per_task) if data_root else None
            if found is not None:
                batches.append({"lq": found["lq"], "gt": found["gt"], "task": [task] * len(found["lq"])})
            continue
        photo_of_crop = [f"photo {i % len(photos)}" for i in range(per_task)]  # as fixed_crops cycles them
        batches += degraded_batches(fixed_crops(photos, size, per_task, seed), [task], seed, sources=photo_of_crop)
    return batches


__all__ = [
    "PAIRED_LAYOUTS",
    "analysis_batches",
    "degraded_batches",
    "evaluation_sets",
    "fixed_crops",
    "paired_test_set",
    "synthetic_test_set",
    "tiles",
    "training_batch",
]
