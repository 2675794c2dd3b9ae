"""The embedded default: RAM's analysis on a small restoration network and bundled photographs.

``run_demo`` needs no download and no user files. It builds a small SwinIR-style
restorer, mask-pre-trains it briefly on crops of the four bundled photographs
under RAM's cheap degradations (50 % of the pixels masked, L1 on the masked
pixels), then ranks its layers by MAC with the paper's defaults (N = 200,
r = 0.5, δ = 1e4, gradient-magnitude target) and writes the scores, RAM's
filter files and the figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Union

import torch

from macattr._checks import check_int
from macattr.layers import candidate_layers
from macattr.ranking import rank_layers
from macattr.restoration.data import degraded_batches, training_batch
from macattr.restoration.images import sample_images
from macattr.restoration.masking import mask_pretraining_loss
from macattr.restoration.networks import SwinIRStyle
from macattr.restoration.ram_files import write_ram_files
from macattr.restoration.train import save_atomic, train
from macattr.scores import LayerScores, resolve_k
from macattr.seeds import derive_seed

DEMO_NETWORK = {"dim": 16, "depths": (2, 2), "heads": 2, "window": 4}
DEMO_TASKS = ("noise25", "blur2", "jpeg50")


def demo_network() -> SwinIRStyle:
    """The demo's network, untrained: a factory for ``macattr rank --model macattr.restoration.demo:demo_network
    --weights demo/model.pt``.

    Examples:
        >>> len(list(demo_network().parameters())) > 0
        True
    """
    return SwinIRStyle(**DEMO_NETWORK)


def demo_batches(seed: int = 0) -> List[Dict[str, object]]:
    """The demo's analysis batches: two 48 × 48 crops of the bundled photographs per task (noise σ 25, blur σ 2,
    JPEG 50), ``{"lq", "gt", "task"}``.

    Examples:
        >>> [batch["task"][0] for batch in demo_batches()]
        ['noise25', 'blur2', 'jpeg50']
    """
    return degraded_batches(torch.stack(sample_images(48))[:2], DEMO_TASKS, seed=derive_seed(seed, "demo analysis"))


def run_demo(
    out: Union[str, Path] = "demo",
    k: Union[int, float] = 0.1,
    n_steps: int = 200,
    pretrain_steps: int = 300,
    seed: int = 0,
    progress: bool = True,
) -> LayerScores:
    """Pre-train the demo network, rank its layers by MAC, write ``out/model.pt`` (the pre-trained weights),
    ``scores.json``, ``scores.csv``, ``heatmap.png``, ``profile.png`` and RAM's ``filter_*.txt``, and print the
    top-k layers.

    Examples:
        >>> import tempfile
        >>> scores = run_demo(tempfile.mkdtemp(), n_steps=2, pretrain_steps=2, progress=False)  # doctest: +ELLIPSIS
        mask pre-training: 2 steps, ...
        >>> len(scores)
        35
    """
    from macattr.plots import plot_layer_importance

    out = Path(out)
    check_int("n_steps", n_steps, 1)
    check_int("pretrain_steps", pretrain_steps, 1)
    torch.manual_seed(check_int("seed", seed, 0))
    started = time.perf_counter()
    model = demo_network()
    resolve_k(k, len(candidate_layers(model)))  # refuse a bad k before training
    photos = sample_images()
    losses = train(model, model.parameters(), lambda step: training_batch(photos, 32, 8, seed, step),
                   mask_pretraining_loss(0.5, 1, seed), steps=pretrain_steps, lr=2e-3, lr_min=2e-4,
                   progress=progress, log=lambda text: None, name="mask pre-training")  # fmt: skip
    trained = time.perf_counter()
    scores = rank_layers(model, demo_batches(seed), n_steps=n_steps, seed=seed, group="task", progress=progress)
    ranked = time.perf_counter()
    save_atomic(out / "model.pt", model.state_dict())
    scores.save(out / "scores.json")
    scores.to_csv(out / "scores.csv")
    write_ram_files(scores, out)
    for kind in ("heatmap", "profile"):
        figure = plot_layer_importance(scores, kind=kind, top_k=k)
        figure.savefig(out / f"{kind}.png", dpi=120)
        figure.clear()
    top = scores.top_k(k)
    print(f"mask pre-training: {pretrain_steps} steps, masked L1 {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"({trained - started:.1f} s)")  # fmt: skip
    print(f"MAC analysis: {scores.images} images, {len(scores)} layers, n_steps={n_steps} ({ranked - trained:.1f} s)")
    print(f"top {len(top)} of {len(scores)} layers to fine-tune (k={k}), {100 * scores.share(top):.1f} % of the "
          "parameters:")  # fmt: skip
    for rank, name in enumerate(top, start=1):
        print(f"  {rank:2d}. {name:40s} {scores[name]:.4g}")
    print(f"wrote {out}/model.pt, scores.json, scores.csv, heatmap.png, profile.png, filter_name.txt, "
          "filter_cond.txt, filter_index.txt")  # fmt: skip
    return scores


__all__ = [
    "DEMO_NETWORK",
    "DEMO_TASKS",
    "demo_batches",
    "demo_network",
    "run_demo",
]
