"""The figures of the documentation, drawn from the results files beside them.

    make demo                          # the demo network and its MAC scores in demo/
    python docs/figures.py --compute   # first the scores behind them (about 4 minutes on a 2-core CPU)
    python docs/figures.py             # the figures from docs/results/ and docs/bench/ (seconds)
    python docs/figures.py --check     # draw them into a scratch folder; exit 1 naming each that differs

Scores (written by ``--compute`` to ``docs/results/``):

1. The demo network (35 layers, pre-trained by ``make demo``): its MAC scores
   (``demo/scores.json``, copied to ``demo_mac.json``) and IG and the gradient
   norm on the same six images.
2. RAM's analysis network at the paper's size (the SwinIR-style network with
   dim 180 and 6 groups of 6 blocks: 263 layers, 11.5 M parameters), with
   random weights (seed 0): MAC, IG and gradient norm over one 32 × 32 image,
   N = 16. The scores mean nothing about a trained SwinIR; they show how the
   figures read at 263 layers.

Figures drawn from results files: the demo's profile, heatmap and comparison; the 263-layer profile, heatmap,
profiles and comparison; the RAM example's two ablations (``ram_medium.json``, ``ram_medium_parameters.json``);
the step sum's convergence (``docs/bench/convergence.json``). The scaling figures are timings: the benchmark
that measures them draws them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"


def compute_scores(demo: Path) -> None:
    """The scores behind the figures, into docs/results/ (needs ``make demo``'s folder)."""
    import torch

    import macattr
    from macattr.restoration.data import degraded_batches
    from macattr.restoration.demo import demo_batches, demo_network
    from macattr.restoration.images import sample_images
    from macattr.restoration.networks import SwinIRStyle
    from macattr.weights import load_weights

    RESULTS.mkdir(exist_ok=True)
    model = load_weights(demo_network(), demo / "model.pt").eval()
    shutil.copyfile(demo / "scores.json", RESULTS / "demo_mac.json")
    for method in ("ig", "gradnorm"):
        scores = macattr.rank_layers(model, demo_batches(), method, n_steps=200, progress=False)
        scores.save(RESULTS / f"demo_{method}.json")
    torch.manual_seed(0)
    model = SwinIRStyle(dim=180, depths=(6,) * 6, heads=6, window=8).eval()
    batches = degraded_batches(torch.stack(sample_images(32))[:1], ["noise25"], seed=0)
    for method in ("mac", "ig", "gradnorm"):
        scores = macattr.rank_layers(model, batches, method, n_steps=16, seed=0, progress=False)
        scores.save(RESULTS / f"paper_swinir_random_{method}.json")
        print(f"{method}: {len(scores)} layers of the paper-size network")


def draw(folder: Path) -> List[Path]:
    """Every figure drawn from the results files, as PNG files in ``folder``; returns their paths."""
    import macattr

    sys.path[:0] = [str(DOCS.parent), str(DOCS.parent / "benchmarks")]  # the examples' and benchmarks' drawings
    from bench_convergence import plot as convergence_figure

    from examples.ram.report import ablation_figure

    folder.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []

    def save(figure, name: str) -> None:
        figure.savefig(folder / name, dpi=110)
        written.append(folder / name)

    demo = [macattr.LayerScores.load(RESULTS / f"demo_{method}.json") for method in ("mac", "ig", "gradnorm")]
    save(macattr.plot_layer_importance(demo[0], kind="profile", top_k=0.1), "demo_profile.png")
    save(macattr.plot_layer_importance(demo[0], kind="heatmap", top_k=0.1), "demo_heatmap.png")
    save(macattr.plot_comparison(demo, top_k=0.1), "demo_comparison.png")
    paper = [macattr.LayerScores.load(RESULTS / f"paper_swinir_random_{m}.json") for m in ("mac", "ig", "gradnorm")]
    save(macattr.plot_layer_importance(paper[0], kind="profile", top_k=0.1), "paper_swinir_profile.png")
    save(macattr.plot_layer_importance(paper[0], kind="heatmap", top_k=0.1), "paper_swinir_heatmap.png")
    save(macattr.plot_layer_importance(paper, kind="profile", top_k=0.1), "paper_swinir_profiles.png")
    save(macattr.plot_comparison(paper, top_k=0.1), "paper_swinir_comparison.png")
    for results, key, name in (("ram_medium.json", "ablation", "ram_medium_ablation.png"),
                               ("ram_medium_parameters.json", "ablation_parameters",
                                "ram_medium_ablation_parameters.png")):  # fmt: skip
        ablation_figure(json.loads((RESULTS / results).read_text())[key], folder / name)
        written.append(folder / name)
    convergence_figure(json.loads((DOCS / "bench" / "convergence.json").read_text()), folder / "convergence.png")
    written.append(folder / "convergence.png")
    return written


def differing(drawn: List[Path], published: Path) -> List[str]:
    """The names of the drawn figures whose pixels differ from those of the same name in ``published``."""
    from matplotlib.image import imread

    changed = []
    for path in drawn:
        old = published / path.name
        if not old.exists() or imread(old).shape != imread(path).shape or (imread(old) != imread(path)).any():
            changed.append(path.name)
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compute", action="store_true", help="first compute the scores into docs/results/")
    parser.add_argument("--check", action="store_true", help="draw into a scratch folder and compare with docs/img")
    parser.add_argument("--demo", type=Path, default=Path("demo"), help="the folder `make demo` wrote")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --compute (default 2)")
    args = parser.parse_args()
    if args.compute:
        import torch

        torch.set_num_threads(args.threads)
        compute_scores(args.demo)
    if not args.check:
        for path in draw(DOCS / "img"):
            print(f"wrote docs/img/{path.name}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        changed = differing(draw(Path(scratch)), DOCS / "img")
    for name in changed:
        print(f"docs/img/{name} differs from what its results file draws: run python docs/figures.py")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
