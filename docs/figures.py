"""The figures of the documentation: profiles, heatmaps and comparisons of real rankings.

    make demo                        # the demo network and its MAC scores in demo/
    python docs/figures.py           # about 4 minutes on a 2-core CPU

1. The demo network (35 layers, pre-trained by ``make demo``): its MAC scores as
   a depth profile and a heatmap, and MAC, IG and gradient norm compared on
   the same six images.
2. RAM's analysis network at the paper's size (the SwinIR-style network with
   dim 180 and 6 groups of 6 blocks: 263 layers, 11.5 M parameters), with
   random weights (seed 0): MAC, IG and gradient norm over one 32 × 32 image,
   N = 16. The scores mean nothing about a trained SwinIR; they show how the
   figures read at 263 layers. Its scores files go to ``docs/results/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import macattr
from macattr.restoration.data import degraded_batches
from macattr.restoration.demo import demo_batches, demo_network
from macattr.restoration.images import sample_images
from macattr.restoration.networks import SwinIRStyle
from macattr.weights import load_weights

DOCS = Path(__file__).resolve().parent


def save(figure, name: str) -> None:
    figure.savefig(DOCS / "img" / name, dpi=110)
    print(f"wrote docs/img/{name}")


def demo_figures(demo: Path) -> None:
    model = load_weights(demo_network(), demo / "model.pt").eval()
    mac = macattr.LayerScores.load(demo / "scores.json")
    batches = demo_batches()
    others = [macattr.rank_layers(model, batches, method, n_steps=200, progress=False) for method in ("ig", "gradnorm")]
    for method, scores in zip(("ig", "gradnorm"), others):
        scores.save(DOCS / "results" / f"demo_{method}.json")
    save(macattr.plot_layer_importance(mac, kind="profile", top_k=0.1), "demo_profile.png")
    save(macattr.plot_layer_importance(mac, kind="heatmap", top_k=0.1), "demo_heatmap.png")
    save(macattr.plot_comparison(mac, *others, top_k=0.1), "demo_comparison.png")


def paper_size_figures() -> None:
    torch.manual_seed(0)
    model = SwinIRStyle(dim=180, depths=(6,) * 6, heads=6, window=8).eval()
    batches = degraded_batches(torch.stack(sample_images(32))[:1], ["noise25"], seed=0)
    sets = []
    for method in ("mac", "ig", "gradnorm"):
        scores = macattr.rank_layers(model, batches, method, n_steps=16, seed=0, progress=False)
        scores.save(DOCS / "results" / f"paper_swinir_random_{method}.json")
        sets.append(scores)
        print(f"{method}: {len(scores)} layers")
    save(macattr.plot_layer_importance(sets[0], kind="profile", top_k=0.1), "paper_swinir_profile.png")
    save(macattr.plot_layer_importance(sets[0], kind="heatmap", top_k=0.1), "paper_swinir_heatmap.png")
    save(macattr.plot_layer_importance(sets, kind="profile", top_k=0.1), "paper_swinir_profiles.png")
    save(macattr.plot_comparison(sets, top_k=0.1), "paper_swinir_comparison.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("demo"), help="the folder `make demo` wrote")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (DOCS / "results").mkdir(exist_ok=True)
    demo_figures(args.demo)
    paper_size_figures()


if __name__ == "__main__":
    main()
