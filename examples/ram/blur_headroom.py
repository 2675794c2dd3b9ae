"""How much of the blur test task a linear filter restores: the headroom a network has on blur σ 2.

Fits one K × K filter by least squares on crops of the training photographs, mapping each blurred pixel's
neighbourhood to the clean pixel, twice: for blur σ = 2 only (non-blind: the test's blur) and for σ drawn from
the training range (blind: what a network fine-tuned on the RAM mix of degradations sees). Prints the mean
PSNR over the test tiles of the blurred input and of each filter's output.

    python examples/ram/blur_headroom.py                  # 11 × 11 filters, 512 crops: about a minute
    python examples/ram/blur_headroom.py --kernel 5 --crops 64 --json headroom.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from macattr.restoration.data import fixed_crops, seeded, synthetic_test_set
from macattr.restoration.degradations import gaussian_blur, random_level
from macattr.restoration.evaluate import per_image_quality
from macattr.restoration.images import photographs
from macattr.restoration.train import write_text

CHUNK = 64  # crops per least-squares chunk: (64 · 3 · 32²) rows × K² columns in float64
MAX_KERNEL = 31  # a chunk's rows then take 1.5 GB


def neighbourhoods(images: Tensor, kernel: int) -> Tensor:
    """Every pixel's ``kernel × kernel`` neighbourhood (reflect padding), per channel: (N · 3 · H · W, kernel²)."""
    n, channels, height, width = images.shape
    padded = F.pad(images.reshape(n * channels, 1, height, width), (kernel // 2,) * 4, mode="reflect")
    return F.unfold(padded, kernel).transpose(1, 2).reshape(-1, kernel * kernel).double()


def fit_filter(clean: Tensor, blur: Callable[[Tensor, int], Tensor], kernel: int) -> Tensor:
    """Least-squares filter (kernel²,) from ``blur(crop (1, 3, H, W), index)`` to the clean crop, over ``clean``
    (N, 3, H, W); the normal equations are summed chunk by chunk so that memory stays flat in N."""
    gram = torch.zeros(kernel * kernel, kernel * kernel, dtype=torch.float64)
    moment = torch.zeros(kernel * kernel, dtype=torch.float64)
    for first in range(0, len(clean), CHUNK):
        part = clean[first : first + CHUNK]
        blurred = torch.cat([blur(part[i : i + 1], first + i) for i in range(len(part))])
        rows = neighbourhoods(blurred, kernel)
        gram += rows.T @ rows
        moment += rows.T @ part.reshape(-1).double()
    return torch.linalg.solve(gram, moment)


def apply_filter(weights: Tensor, images: Tensor, kernel: int) -> Tensor:
    """``images`` (N, 3, H, W) filtered with ``weights`` (kernel²,), clamped to [0, 1]; CHUNK images at a time."""
    parts = [(neighbourhoods(part, kernel) @ weights).reshape(part.shape) for part in images.split(CHUNK)]
    return torch.cat(parts).clamp(0.0, 1.0).float()


def headroom(kernel: int, crops: int, size: int, seed: int) -> Dict[str, float]:
    """Mean PSNR (dB) over the blur2 test tiles of the input and of the non-blind and blind linear filters."""
    test = synthetic_test_set("blur2", photographs("test"), size, seed)
    clean = fixed_crops(photographs("train"), 32, crops, seed)
    generator = seeded(seed, crops)
    levels = [random_level("blur", generator) for _ in range(crops)]
    filters = {
        "non-blind linear filter (sigma 2)": fit_filter(clean, lambda crop, _: gaussian_blur(crop, 2.0), kernel),
        "blind linear filter (sigma 0.1-3.1)": fit_filter(
            clean, lambda crop, i: gaussian_blur(crop, levels[i]), kernel
        ),
    }
    psnr: Dict[str, float] = {"input": float(np.mean(per_image_quality(test["lq"], test["gt"])["psnr"]))}
    for name, weights in filters.items():
        restored = apply_filter(weights, test["lq"], kernel)
        psnr[name] = float(np.mean(per_image_quality(restored, test["gt"])["psnr"]))
    return psnr


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=int, default=11, help="filter size, odd (default 11)")
    parser.add_argument("--crops", type=int, default=512, help="32 × 32 training crops to fit on (default 512)")
    parser.add_argument("--size", type=int, default=48, help="test tile size, as the presets' evaluation (48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (1 <= args.kernel <= MAX_KERNEL and args.kernel % 2 == 1):
        parser.error(f"--kernel must be an odd number from 1 to {MAX_KERNEL}, got {args.kernel}")
    if args.crops < 1:
        parser.error(f"--crops must be >= 1, got {args.crops}")
    if args.size < 16:
        parser.error(f"--size must be >= 16 (the blur's kernel is 15 × 15), got {args.size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    psnr = headroom(args.kernel, args.crops, args.size, args.seed)
    for name, value in psnr.items():
        gain = f"  ({value - psnr['input']:+.2f} dB)" if name != "input" else ""
        print(f"{name:38s} {value:7.3f} dB{gain}")
    if args.json:
        write_text(args.json, json.dumps({"settings": vars(args) | {"json": str(args.json)}, "psnr": psnr}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
