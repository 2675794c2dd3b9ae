"""Degradations of images (N, C, H, W) in [0, 1]: RAM's cheap ones and two labelled stand-ins.

RAM's appendix: Gaussian noise σ ∈ (0, 50] on a 0–255 scale (then clipped),
Gaussian blur with a 15 × 15 kernel and σ ∈ [0.1, 3.1], JPEG quality 20–90 for
training; noise σ = 15, 25, 50, blur σ = 2.0 and JPEG quality 50 for testing.

A *task* names one degradation: ``noise25``, ``blur2``, ``jpeg50`` (any level),
or the stand-ins ``haze-synthetic`` (atmospheric scattering) and
``lowlight-synthetic`` (gamma, gain, noise) for users without the real haze
and low-light data sets; those are never the real sets.
"""

from __future__ import annotations

import io
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from macattr._checks import check_int, check_real
from macattr.paths import gaussian_kernel1d

TRAIN_RANGES: Dict[str, Tuple[float, float]] = {"noise": (0.0, 50.0), "blur": (0.1, 3.1), "jpeg": (20, 90)}
TEST_TASKS = ("noise15", "noise25", "noise50", "blur2", "jpeg50")
STAND_IN_TASKS = ("haze-synthetic", "lowlight-synthetic")
KINDS = ("noise", "blur", "jpeg")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise TypeError("images must be a floating-point tensor (N, C, H, W) with values in [0, 1]")


def gaussian_noise(images: Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Add N(0, (σ/255)²) per element, σ in [0, 255] on the 0–255 scale, then clip to [0, 1].

    Examples:
        >>> noisy = gaussian_noise(torch.full((1, 3, 64, 64), 0.5), 25, torch.Generator().manual_seed(0))
        >>> round(float((noisy - 0.5).std() * 255))
        25
    """
    _check_images(images)
    sigma = check_real("sigma", sigma, low=0.0, high=255.0)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + noise * (sigma / 255.0)).clamp(0.0, 1.0)


def gaussian_kernel(sigma: float, size: int = 15) -> Tensor:
    """Normalised 2-D Gaussian kernel (size, size), float64; sums to 1.

    Examples:
        >>> kernel = gaussian_kernel(2.0)
        >>> kernel.shape, round(float(kernel.sum()), 12)
        (torch.Size([15, 15]), 1.0)
    """
    line = gaussian_kernel1d(check_real("sigma", sigma, low=0.0, low_open=True), size)
    return line[:, None] * line[None, :]


def gaussian_blur(images: Tensor, sigma: float, size: int = 15) -> Tensor:
    """Blur every channel with a ``size × size`` Gaussian kernel of std ``sigma`` (reflect padding).

    Examples:
        >>> image = torch.zeros(1, 1, 21, 21)
        >>> image[..., 10, 10] = 1.0
        >>> blurred = gaussian_blur(image, 2.0)
        >>> round(float(blurred.sum()), 4), float(blurred.max()) < 0.05
        (1.0, True)
    """
    _check_images(images)
    kernel = gaussian_kernel(sigma, size).to(images)
    channels = images.shape[1]
    pad = size // 2
    if min(images.shape[-2:]) <= pad:
        raise ValueError(f"images of size {tuple(images.shape[-2:])} are too small for a {size}×{size} blur")
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, size, size), groups=channels).clamp(0.0, 1.0)


def jpeg(images: Tensor, quality: int) -> Tensor:
    """Encode and decode each image as JPEG at ``quality`` in [1, 95] with Pillow's codec.

    Examples:
        >>> image = torch.rand(1, 3, 16, 16)
        >>> jpeg(image, 50).shape, torch.equal(jpeg(image, 50), jpeg(image, 50))
        (torch.Size([1, 3, 16, 16]), True)
    """
    _check_images(images)
    quality = check_int("quality", quality, 1)
    if quality > 95:
        raise ValueError(f"quality must be an integer in [1, 95], got {quality}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {images.shape[1]}")
    out = []
    for image in images:
        array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out.append(torch.from_numpy(decoded).permute(2, 0, 1))
    return torch.stack(out).to(device=images.device, dtype=images.dtype)


def degrade(images: Tensor, kind: str, level: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Apply one degradation: ``kind`` "noise" (σ on 0–255), "blur" (σ) or "jpeg" (quality).

    Examples:
        >>> degrade(torch.rand(2, 3, 32, 32), "blur", 2.0).shape
        torch.Size([2, 3, 32, 32])
    """
    if kind == "noise":
        return gaussian_noise(images, level, generator)
    if kind == "blur":
        return gaussian_blur(images, level)
    if kind == "jpeg":
        return jpeg(images, int(level))
    raise ValueError(f"kind must be 'noise', 'blur' or 'jpeg', got {kind!r}")


def random_level(kind: str, generator: torch.Generator) -> float:
    """A training level drawn uniformly from the appendix's range for ``kind``.

    Examples:
        >>> 20 <= random_level("jpeg", torch.Generator().manual_seed(0)) <= 90
        True
    """
    if kind not in TRAIN_RANGES:
        raise ValueError(f"kind must be one of {sorted(TRAIN_RANGES)}, got {kind!r}")
    low, high = TRAIN_RANGES[kind]
    if kind == "jpeg":
        return float(torch.randint(int(low), int(high) + 1, (), generator=generator))
    value = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
    return max(value, 1e-3) if kind == "noise" else value  # σ ∈ (0, 50]


def parse_task(task: str) -> Tuple[str, float]:
    """("noise", 25.0) for "noise25", ("blur", 1.5) for "blur1.5", ("jpeg", 50.0) for "jpeg50".

    Examples:
        >>> parse_task("noise25"), parse_task("blur1.5")
        (('noise', 25.0), ('blur', 1.5))
    """
    if not isinstance(task, str):
        raise TypeError(f"a task must be a name such as 'noise25', got {task!r}")
    kind = task.rstrip("0123456789.")
    try:
        level = float(task[len(kind) :])
    except ValueError:
        level = None
    if kind not in KINDS or level is None:
        raise ValueError(f"a task must look like noise25, blur2 or jpeg50 (or be one of {list(STAND_IN_TASKS)}), "
                         f"got {task!r}")  # fmt: skip
    return kind, level


def synthetic_haze(clean: Tensor, generator: torch.Generator) -> Tensor:
    """Atmospheric scattering ``I = J t + A (1 − t)``, ``t = exp(−β d)`` with depth growing towards the top.

    Examples:
        >>> hazy = synthetic_haze(torch.zeros(1, 3, 8, 8), torch.Generator().manual_seed(0))
        >>> bool((hazy > 0).all())  # the airlight brightens even black pixels
        True
    """
    n, _, h, w = clean.shape
    beta = 0.6 + 1.2 * torch.rand(n, 1, 1, 1, generator=generator)
    light = 0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    depth = torch.linspace(1.0, 0.2, h).reshape(1, 1, h, 1).expand(n, 1, h, w)
    transmission = torch.exp(-beta * depth)
    return (clean * transmission + light * (1 - transmission)).clamp(0, 1)


def synthetic_low_light(clean: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma 2, gain 0.25 and Gaussian noise of σ = 0.01.

    Examples:
        >>> dark = synthetic_low_light(torch.ones(1, 3, 8, 8), torch.Generator().manual_seed(0))
        >>> bool(dark.mean() < 0.3)
        True
    """
    dark = 0.25 * clean.pow(2.0)
    return (dark + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)


def degrade_task(clean: Tensor, task: str, generator: torch.Generator) -> Tensor:
    """The low-quality version of ``clean`` (N, 3, H, W) for ``task`` (see the module docstring).

    Examples:
        >>> clean = torch.full((1, 3, 32, 32), 0.5)
        >>> noisy = degrade_task(clean, "noise25", torch.Generator().manual_seed(0))
        >>> round(float((noisy - clean).std() * 255))
        25
    """
    if task == "haze-synthetic":
        return synthetic_haze(clean, generator)
    if task == "lowlight-synthetic":
        return synthetic_low_light(clean, generator)
    kind, level = parse_task(task)
    return degrade(clean, kind, level, generator)


__all__ = [
    "KINDS",
    "STAND_IN_TASKS",
    "TEST_TASKS",
    "TRAIN_RANGES",
    "degrade",
    "degrade_task",
    "gaussian_blur",
    "gaussian_kernel",
    "gaussian_noise",
    "jpeg",
    "parse_task",
    "random_level",
    "synthetic_haze",
    "synthetic_low_light",
]
