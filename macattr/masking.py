"""RAM's mask pre-training pieces: random pixel masks and the masked L1 loss."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from macattr._checks import check_int, check_real


def random_pixel_mask(
    n: int, height: int, width: int, ratio: float = 0.5, patch_size: int = 1,
    generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None,
) -> Tensor:  # fmt: skip
    """A mask (N, 1, H, W) with 1 on the masked pixels: exactly ``round(ratio · cells)`` of the
    ``p × p`` patches of each sample, chosen uniformly (RAM: ratio 0.5, 1 × 1 patches)."""
    n, height, width = check_int("n", n, 1), check_int("height", height, 1), check_int("width", width, 1)
    ratio = check_real("ratio", ratio, low=0.0, high=1.0)
    patch_size = check_int("patch_size", patch_size, 1)
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size must divide the height and width ({height}×{width}), got {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    order = torch.rand(n, rows * cols, generator=generator).argsort(dim=1)
    masked = (order < round(ratio * rows * cols)).float().reshape(n, 1, rows, cols)
    mask = masked.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return mask.to(device) if device is not None else mask


def masked_l1(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean ``|output − target|`` over the masked pixels only (mask (N, 1, H, W), 1 = masked), all channels."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} must have the same shape")
    weight = mask.expand_as(output)
    total = weight.sum()
    if total == 0:
        raise ValueError("mask masks no pixel; the masked L1 loss is undefined")
    return ((output - target).abs() * weight).sum() / total
