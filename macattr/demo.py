"""The embedded default: RAM's analysis on a small restoration network and real photographs.

``run_demo`` needs no download and no user files. It builds a compact
restoration network (shallow conv, residual groups of residual blocks, a conv
closing each group, reconstruction conv), mask-pre-trains it briefly on crops of
the bundled photographs under RAM's cheap degradations (50 % of pixels masked,
L1 on the masked pixels), then ranks its layers by MAC with the paper's defaults
(N = 200, r = 0.5, δ = 1e4, gradient-magnitude target) and writes the scores,
RAM's filter files and a heatmap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from macattr._checks import check_int
from macattr.degradations import degrade, named_setting, random_level
from macattr.images import random_crop, sample_images
from macattr.layers import candidate_layers
from macattr.masking import masked_l1, random_pixel_mask
from macattr.plots import plot_layer_importance
from macattr.ranking import rank_layers
from macattr.scores import LayerScores, resolve_k


class ResidualBlock(nn.Module):
    """conv → GELU → conv with a skip: (N, C, H, W) → (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ResidualGroup(nn.Module):
    """Residual blocks then a conv, with a skip over the group."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


class DemoRestorer(nn.Module):
    """A small SwinIR-shaped convolutional restorer: (N, 3, H, W) → (N, 3, H, W) in [0, 1] units.

    ``mask`` (N, 1, H, W), 1 = masked, replaces masked pixels by a learned mask token (RAM pre-training).
    """

    def __init__(self, channels: int = 24, groups: int = 3, blocks: int = 2) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.groups = nn.Sequential(*(ResidualGroup(channels, blocks) for _ in range(groups)))
        self.conv_after_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if mask is not None:
            x = x * (1 - mask) + self.mask_token * mask
        shallow = self.conv_first(x)
        deep = self.conv_after_body(self.groups(shallow)) + shallow
        return x + self.conv_last(deep)


def _degraded_batch(images: List[Tensor], size: int, batch: int, generator: torch.Generator) -> Dict[str, Tensor]:
    clean = torch.stack(
        [
            random_crop(images[int(i)], size, generator)
            for i in torch.randint(len(images), (batch,), generator=generator)
        ]
    )
    kinds = ["noise", "blur", "jpeg"]
    lq = torch.cat(
        [degrade(clean[i : i + 1], kind, random_level(kind, generator), generator) for i, kind in
         enumerate(kinds[int(k)] for k in torch.randint(3, (batch,), generator=generator))]
    )  # fmt: skip
    return {"lq": lq, "gt": clean}


def pretrain(
    model: nn.Module, steps: int = 200, size: int = 32, batch: int = 8, seed: int = 0, progress: bool = True
) -> List[float]:
    """Mask pre-training: 50 % of pixels masked, L1 on the masked pixels, Adam 1e-3 → cosine. Returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    images = sample_images()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    model.train()
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="mask pre-training", leave=False):
        pair = _degraded_batch(images, size, batch, generator)
        mask = random_pixel_mask(batch, size, size, 0.5, generator=generator)
        loss = masked_l1(model(pair["lq"], mask), pair["gt"], mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def analysis_batches(size: int = 48, per_task: int = 2, seed: int = 1) -> List[Dict[str, object]]:
    """One batch per test-setting degradation (noise σ 25, blur σ 2, JPEG 50) of the bundled photos' centre crops."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.stack(sample_images(size))[:per_task]
    batches = []
    for name in ("noise25", "blur2", "jpeg50"):
        kind, level = named_setting(name)
        batches.append({"lq": degrade(clean, kind, level, generator), "gt": clean, "task": [name] * len(clean)})
    return batches


def run_demo(
    out: Union[str, Path] = "demo",
    k: Union[int, float] = 0.1,
    n_steps: int = 200,
    pretrain_steps: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> LayerScores:
    """Pre-train the demo network, rank its layers by MAC, write ``out/scores.json``, ``heatmap.png``,
    ``bar.png``, ``scores.csv`` and RAM's ``filter_*.txt``, and print the top-k layers."""
    out = Path(out)
    check_int("n_steps", n_steps, 1)
    check_int("pretrain_steps", pretrain_steps, 1)
    torch.manual_seed(check_int("seed", seed, 0))
    started = time.perf_counter()
    model = DemoRestorer()
    resolve_k(k, len(candidate_layers(model)))  # refuse a bad k before training
    losses = pretrain(model, steps=pretrain_steps, seed=seed, progress=progress)
    trained = time.perf_counter()
    scores = rank_layers(model, analysis_batches(), n_steps=n_steps, seed=seed, group="task", progress=progress)
    ranked = time.perf_counter()
    scores.save(out / "scores.json")
    scores.to_csv(out / "scores.csv")
    scores.to_ram_files(out)
    for kind, file in (("heatmap", "heatmap.png"), ("bar", "bar.png")):
        figure = plot_layer_importance(scores, kind=kind, top_k=k)
        figure.savefig(out / file, dpi=120)
        figure.clear()
    top = scores.top_k(k)
    print(f"mask pre-training: {pretrain_steps} steps, masked L1 {losses[0]:.4f} -> {losses[-1]:.4f}", end=" ")
    print(f"({trained - started:.1f} s)")
    print(f"MAC analysis: {scores.images} images, {len(scores)} layers, n_steps={n_steps} ({ranked - trained:.1f} s)")
    print(f"top {len(top)} of {len(scores)} layers to fine-tune (k={k}):")
    for rank, name in enumerate(top, start=1):
        print(f"  {rank:2d}. {name:40s} {scores[name]:.4g}")
    print(
        f"wrote {out}/scores.json, heatmap.png, bar.png, scores.csv, filter_name.txt, filter_cond.txt, filter_index.txt"
    )
    return scores
