"""RAM's mask pre-training pieces: random pixel masks and the masked L1 loss."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

from macattr._checks import check_int, check_real
from macattr.seeds import seeded_generator


def random_pixel_mask(
    n: int, height: int, width: int, ratio: float = 0.5, patch_size: int = 1,
    generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None,
) -> Tensor:  # fmt: skip
    """A mask (N, 1, H, W) with 1 on the masked pixels: exactly ``round(ratio · cells)`` of the
    ``p × p`` patches of each sample, chosen uniformly (RAM: ratio 0.5, 1 × 1 patches).

    Examples:
        >>> mask = random_pixel_mask(2, 4, 4, ratio=0.5, generator=torch.Generator().manual_seed(0))
        >>> mask.shape, mask.sum(dim=(1, 2, 3)).tolist()
        (torch.Size([2, 1, 4, 4]), [8.0, 8.0])
    """
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
    """Mean ``|output − target|`` over the masked pixels only (mask (N, 1, H, W), 1 = masked), all channels.

    Examples:
        >>> mask = torch.tensor([[[[1.0, 0.0]]]])
        >>> float(masked_l1(torch.tensor([[[[1.0, 5.0]]]]), torch.zeros(1, 1, 1, 2), mask))
        1.0
    """
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} must have the same shape")
    weight = mask.expand_as(output)
    total = weight.sum()
    if total == 0:
        raise ValueError("mask masks no pixel; the masked L1 loss is undefined")
    return ((output - target).abs() * weight).sum() / total


def mask_pretraining_loss(
    ratio: float = 0.5, patch_size: int = 1, seed: int = 0
) -> Callable[[nn.Module, Dict[str, Tensor], int], Tensor]:
    """RAM's pre-training loss as ``loss_of(model, batch, step)``: mask a fraction ``ratio`` of each input's
    pixels (a fresh mask per step, from (seed, step)), run ``model(lq, mask)``, L1 on the masked pixels only.

    Examples:
        >>> class Copies(nn.Module):
        ...     def forward(self, x, mask):
        ...         return x
        >>> loss_of = mask_pretraining_loss(0.5, seed=0)
        >>> batch = {"lq": torch.zeros(1, 3, 4, 4), "gt": torch.ones(1, 3, 4, 4)}
        >>> float(loss_of(Copies(), batch, step=0))  # |0 − 1| on every masked pixel
        1.0
    """

    def loss_of(model: nn.Module, batch: Dict[str, Tensor], step: int) -> Tensor:
        n, _, h, w = batch["lq"].shape
        generator = seeded_generator(seed, "mask", step)
        mask = random_pixel_mask(n, h, w, ratio, patch_size, generator).to(batch["lq"].device)
        return masked_l1(model(batch["lq"], mask).float(), batch["gt"], mask)

    return loss_of


def whole_image_l1(model: nn.Module, batch: Dict[str, Tensor], step: int) -> Tensor:
    """The fine-tuning loss as ``loss_of(model, batch, step)``: L1 between ``model(lq)`` and ``gt`` on whole images.

    Examples:
        >>> float(whole_image_l1(nn.Identity(), {"lq": torch.zeros(1, 3, 2, 2), "gt": torch.ones(1, 3, 2, 2)}, 0))
        1.0
    """
    return (model(batch["lq"]).float() - batch["gt"]).abs().mean()


def relative_l1(model: nn.Module, batch: Dict[str, Tensor], step: int) -> Tensor:
    """A fine-tuning loss as ``loss_of(model, batch, step)``: each sample's L1 error divided by its input's L1
    error (at least 0.01), averaged; mild degradations then weigh as much as heavy noise.

    Examples:
        >>> batch = {"lq": torch.full((1, 3, 2, 2), 0.5), "gt": torch.ones(1, 3, 2, 2)}
        >>> float(relative_l1(nn.Identity(), batch, 0))  # the identity keeps the input's error: 1
        1.0
    """
    error = (model(batch["lq"]).float() - batch["gt"]).abs().flatten(1).mean(1)
    scale = (batch["lq"] - batch["gt"]).abs().flatten(1).mean(1).clamp(min=0.01)
    return (error / scale).mean()


__all__ = [
    "mask_pretraining_loss",
    "masked_l1",
    "random_pixel_mask",
    "relative_l1",
    "whole_image_l1",
]
