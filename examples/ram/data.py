"""Data for the RAM example: degradations synthesised on real photographs, or the user's paired data sets.

Embedded default (no download): scikit-image's bundled photographs. Training
crops come from nine of them, test images from four others (held out).

Tasks:
- ``noise15``, ``noise25``, ``noise50``, ``blur2``, ``jpeg50``: RAM's appendix test
  settings, synthesised (noise clipped, 15×15 blur, a real JPEG codec); training
  draws noise σ ∈ (0, 50], blur σ ∈ [0.1, 3.1], JPEG quality 20–90.
- ``haze-synthetic``, ``lowlight-synthetic``: clearly labelled stand-ins when the user
  has no SOTS/LOL: haze by the atmospheric scattering model ``I = J t + A (1 − t)``,
  low light by gamma 2, gain 0.25 and Gaussian noise. Never reported as the real sets.
- ``haze``, ``rain``, ``lowlight``, ``motionblur``: the user's paired folders under
  ``--data-root`` (SOTS/RESIDE, Rain13k, LOL, GoPro layouts, see ``PAIRED_LAYOUTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from macattr.degradations import TEST_SETTINGS, degrade, named_setting, random_level
from macattr.images import image_files, random_crop, read_image

TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
                "immunohistochemistry", "brick", "grass", "gravel")  # fmt: skip
TEST_PHOTOS = ("coffee", "camera", "coins", "moon")
SYNTHETIC_TASKS = tuple(TEST_SETTINGS)  # noise15, noise25, noise50, blur2, jpeg50
STAND_IN_TASKS = ("haze-synthetic", "lowlight-synthetic")
TRAIN_KINDS = ("noise", "blur", "jpeg")

# task → (low-quality folder, ground-truth folder) under --data-root
PAIRED_LAYOUTS: Dict[str, Tuple[str, str]] = {
    "haze": ("SOTS/outdoor/hazy", "SOTS/outdoor/gt"),
    "rain": ("Rain100L/input", "Rain100L/target"),
    "lowlight": ("LOL/eval15/low", "LOL/eval15/high"),
    "motionblur": ("GoPro/test/blur", "GoPro/test/sharp"),
}


def photographs(split: str) -> List[Tensor]:
    """scikit-image's bundled photographs as RGB float tensors (3, H, W) in [0, 1]; ``split`` "train" or "test"."""
    import skimage.data

    names = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}[split]
    out = []
    for name in names:
        array = getattr(skimage.data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle → left view
        array = np.stack([array] * 3, axis=-1) if array.ndim == 2 else array[..., :3]
        out.append(torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous())
    return out


def synthetic_haze(clean: Tensor, generator: torch.Generator) -> Tensor:
    """Atmospheric scattering ``I = J t + A (1 − t)``, ``t = exp(−β d)`` with depth growing towards the top."""
    n, _, h, w = clean.shape
    beta = 0.6 + 1.2 * torch.rand(n, 1, 1, 1, generator=generator)
    light = 0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    depth = torch.linspace(1.0, 0.2, h).reshape(1, 1, h, 1).expand(n, 1, h, w)
    transmission = torch.exp(-beta * depth)
    return (clean * transmission + light * (1 - transmission)).clamp(0, 1)


def synthetic_low_light(clean: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma 2, gain 0.25 and Gaussian noise of σ = 0.01."""
    dark = 0.25 * clean.pow(2.0)
    return (dark + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)


def make_degraded(clean: Tensor, task: str, generator: torch.Generator) -> Tensor:
    """The low-quality version of ``clean`` (N, 3, H, W) for a synthetic or stand-in task."""
    if task in SYNTHETIC_TASKS:
        kind, level = named_setting(task)
        return degrade(clean, kind, level, generator)
    if task == "haze-synthetic":
        return synthetic_haze(clean, generator)
    if task == "lowlight-synthetic":
        return synthetic_low_light(clean, generator)
    raise ValueError(f"no synthetic version of task {task!r}")


def training_batch(
    photos: List[Tensor], size: int, batch: int, seed: int, step: int, stand_ins: bool = False
) -> Dict[str, Tensor]:
    """Batch ``step`` of training, {"lq", "gt"} (B, 3, size, size): random crops, each with a random training
    degradation. It depends only on (seed, step), so an interrupted run resumes with the same data."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    kinds = TRAIN_KINDS + (STAND_IN_TASKS if stand_ins else ())
    picks = torch.randint(len(photos), (batch,), generator=generator).tolist()
    clean = torch.stack([random_crop(photos[i], size, generator) for i in picks])
    lq = []
    for i, k in enumerate(torch.randint(len(kinds), (batch,), generator=generator).tolist()):
        one, kind = clean[i : i + 1], kinds[k]
        if kind in TRAIN_KINDS:
            lq.append(degrade(one, kind, random_level(kind, generator), generator))
        else:
            lq.append(make_degraded(one, kind, generator))
    return {"lq": torch.cat(lq), "gt": clean}


def fixed_crops(photos: List[Tensor], size: int, count: int, seed: int) -> Tensor:
    """``count`` crops (count, 3, size, size), cycling through the photos, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([random_crop(photos[i % len(photos)], size, generator) for i in range(count)])


def synthetic_test_set(task: str, photos: List[Tensor], size: int, count: int, seed: int) -> Dict[str, Tensor]:
    """A fixed test set {"lq", "gt"} for a synthetic task: the same images and noise for every run."""
    clean = fixed_crops(photos, size, count, seed)
    task_seed = seed * 1000 + sum(map(ord, task))
    return {"lq": make_degraded(clean, task, torch.Generator().manual_seed(task_seed)), "gt": clean}


def paired_test_set(root: Path, task: str, size: Optional[int], count: int) -> Optional[Dict[str, Tensor]]:
    """The user's paired images for ``task`` under ``root`` (PAIRED_LAYOUTS), centre-cropped to ``size``;
    None when the folders are absent. Ground truth is matched by file name, or by the name before the
    first "_" (SOTS names hazy images ``0001_0.8_0.2.jpg`` for ``0001.png``)."""
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
    tasks: List[str], data_root: Optional[Path], size: int, count: int, seed: int
) -> Tuple[Dict[str, Dict[str, Tensor]], List[str]]:
    """Test sets per task, and notes on what was synthesised, stood in or skipped."""
    photos = photographs("test")
    sets, notes = {}, []
    for task in tasks:
        if task in SYNTHETIC_TASKS or task in STAND_IN_TASKS:
            sets[task] = synthetic_test_set(task, photos, size, count, seed)
            if task in STAND_IN_TASKS:
                notes.append(f"{task}: synthetic stand-in on bundled photographs, not the real data set")
        elif task in PAIRED_LAYOUTS:
            found = paired_test_set(data_root, task, size, count) if data_root else None
            if found is None:
                where = data_root / PAIRED_LAYOUTS[task][0] if data_root else "(no --data-root)"
                notes.append(f"{task}: skipped, no paired data at {where}")
            else:
                sets[task] = found
        else:
            raise ValueError(f"unknown task {task!r}")
    return sets, notes


def analysis_batches(
    tasks: List[str], data_root: Optional[Path], size: int, per_task: int, seed: int
) -> List[Dict[str, object]]:
    """One batch per task of training photographs (not the test images) for the MAC analysis, with a "task" key."""
    photos = photographs("train")
    batches = []
    for task in tasks:
        if task in PAIRED_LAYOUTS:
            found = paired_test_set(data_root, task, size, per_task) if data_root else None
            if found is None:
                continue
            lq, gt = found["lq"], found["gt"]
        else:
            gt = fixed_crops(photos, size, per_task, seed + 7)
            lq = make_degraded(gt, task, torch.Generator().manual_seed(seed + sum(map(ord, task))))
        batches.append({"lq": lq, "gt": gt, "task": [task] * len(lq)})
    return batches
