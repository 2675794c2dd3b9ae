"""Restoring test images and scoring them: PSNR and SSIM from scikit-image's metrics (the ``[examples]`` extra)."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from macattr.restoration.masking import random_pixel_mask
from macattr.seeds import seeded_generator


@torch.no_grad()
def restore(model: nn.Module, lq: Tensor, device: torch.device, mask: Optional[Tensor] = None, bf16: bool = False,
            batch: int = 8) -> Tensor:  # fmt: skip
    """The model's output for ``lq`` (N, 3, H, W), clamped to [0, 1], on the CPU, in float32.

    Examples:
        >>> restore(nn.Identity(), torch.full((2, 3, 8, 8), 1.5), torch.device("cpu")).max().item()  # clamped
        1.0
    """
    model.eval()
    out = []
    for start in range(0, len(lq), batch):
        x = lq[start : start + batch].to(device)
        m = None if mask is None else mask[start : start + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = model(x) if m is None else model(x, m)
        out.append(y.float().clamp(0, 1).cpu())
    return torch.cat(out)


def restore_with_twin_masks(model: nn.Module, lq: Tensor, device: torch.device, seed: int, ratio: float = 0.5,
                            bf16: bool = False) -> Tensor:  # fmt: skip
    """A mask-pre-trained model on whole images (RAM's Fig. 4): run it with a pixel mask and with its
    complement, and keep each pixel from the run in which it was masked.

    Examples:
        >>> class Masked(nn.Module):
        ...     def forward(self, x, mask):
        ...         return mask.expand_as(x)  # 1 where this run masked the pixel
        >>> out = restore_with_twin_masks(Masked(), torch.rand(1, 3, 4, 4), torch.device("cpu"), seed=0)
        >>> bool((out == 1).all())  # every pixel comes from the run that masked it
        True
    """
    n, _, h, w = lq.shape
    mask = random_pixel_mask(n, h, w, ratio, generator=seeded_generator(seed, "twin masks"))
    first = restore(model, lq, device, mask, bf16)
    second = restore(model, lq, device, 1 - mask, bf16)
    return first * mask + second * (1 - mask)


def per_image_quality(output: Tensor, truth: Tensor) -> Dict[str, List[float]]:
    """PSNR (dB) and SSIM of every image of (N, 3, H, W) in [0, 1]: lists of N values each.

    Examples:
        >>> truth = torch.full((2, 3, 16, 16), 0.5)
        >>> [round(v, 2) for v in per_image_quality(truth + 0.1, truth)["psnr"]]
        [20.0, 20.0]
    """
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError:
        raise ImportError("image quality needs scikit-image: pip install 'macattr[examples]'") from None
    psnr, ssim = [], []
    for a, b in zip(output, truth):
        x = a.permute(1, 2, 0).double().numpy()
        y = b.permute(1, 2, 0).double().numpy()
        psnr.append(float(peak_signal_noise_ratio(y, x, data_range=1.0)))
        ssim.append(float(structural_similarity(y, x, data_range=1.0, channel_axis=-1)))
    return {"psnr": psnr, "ssim": ssim}


def quality(output: Tensor, truth: Tensor) -> Dict[str, float]:
    """Mean PSNR (dB) and SSIM over images (N, 3, H, W) in [0, 1].

    Examples:
        >>> truth = torch.full((1, 3, 16, 16), 0.5)
        >>> round(quality(truth + 0.01, truth)["psnr"], 2)
        40.0
    """
    return {name: float(np.mean(values)) for name, values in per_image_quality(output, truth).items()}


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> Dict[str, float]:
    """Mean of the paired differences ``a − b`` (one pair per test image) and its bootstrap interval.

    The images are resampled with replacement ``resamples`` times; the interval
    holds the central ``level`` of the resampled means (percentile bootstrap).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> base = rng.normal(30, 3, 400)
        >>> result = paired_bootstrap(base + 0.2 + rng.normal(0, 0.1, 400), base)
        >>> result["low"] < 0.2 < result["high"], round(result["mean"], 1)
        (True, 0.2)
    """
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if differences.ndim != 1 or len(differences) < 2:
        raise ValueError(f"paired_bootstrap needs two equal-length vectors of two or more values, got {a!r}, {b!r}")
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(differences.mean()), "low": float(low), "high": float(high)}


__all__ = [
    "paired_bootstrap",
    "per_image_quality",
    "quality",
    "restore",
    "restore_with_twin_masks",
]
