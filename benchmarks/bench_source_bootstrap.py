"""How sure the RAM analysis' top 10 % is when the bootstrap resamples photographs instead of images.

    PYTHONPATH=. python benchmarks/bench_source_bootstrap.py --json docs/bench/source_bootstrap.json

The RAM example's ``medium`` analysis set: ``per_task`` crops of 32 pixels per task from the nine training
photographs, the same crops degraded by each of the five synthetic tasks (so every photograph appears once per
task). One MAC ranking of the medium SwinIR (``--medium-weights``: its mask pre-training, else random weights,
seed 0) with the trapezoid at ``--n-steps``, then ``confidence()`` twice: resampling the images as independent,
and resampling the photographs they came from (each task a group). Written: P(same top k), the expected overlap
with a rerun and the 95 % interval widths of the top layers, both ways.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from resumable import write_results

from bench_networks import ram_medium
from macattr import LayerScores, UncertifiedWarning, rank_layers
from macattr.restoration.data import analysis_batches
from macattr.restoration.images import photographs

TASKS = ("noise15", "noise25", "noise50", "blur2", "jpeg50")


def _summary(scores: LayerScores, k: float, resamples: int) -> Dict[str, Any]:
    confidence = scores.confidence(k, resamples=resamples, seed=0)
    top = confidence.selected
    return {"same_top_k": confidence.same_top_k, "expected_overlap": confidence.expected_overlap,
            "sources": confidence.sources,
            "interval_width": {n: confidence.high[n] - confidence.low[n] for n in top},
            "in_top_k": {n: confidence.in_top_k[n] for n in top}}  # fmt: skip


def run(args: argparse.Namespace) -> Dict[str, Any]:
    model = ram_medium("swinir", args.medium_weights).double()
    batches = analysis_batches(TASKS, photographs("train"), None, 32, args.per_task, seed=0)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncertifiedWarning)  # the bootstrap is what is measured here
        scores = rank_layers(model, batches, group="task", n_steps=args.n_steps, rule="trapezoid", seed=0,
                             progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    independent = LayerScores(dict(scores), scores.method, scores.config, scores.images,
                              per_image=scores.per_image, groups=scores.groups)  # fmt: skip
    return {"images": scores.images, "photographs": len(set(scores.sources)), "seconds": seconds,
            "by_image": _summary(independent, 0.1, args.resamples),
            "by_photograph": _summary(scores, 0.1, args.resamples)}  # fmt: skip


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medium-weights", type=Path, help="OUT/pretrain/model.pt of the medium RAM preset")
    parser.add_argument("--per-task", type=int, default=10, help="crops per task (the medium preset's: 10)")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="results file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args)
    results.update(settings={"per_task": args.per_task, "n_steps": args.n_steps, "resamples": args.resamples,
                             "medium_weights": str(args.medium_weights), "torch": torch.__version__,
                             "threads": args.threads})  # fmt: skip
    for way in ("by_image", "by_photograph"):
        entry = results[way]
        widths = np.array(list(entry["interval_width"].values()))
        print(f"{way:14s} P(same top k) {entry['same_top_k']:.3f}  expected overlap {entry['expected_overlap']:.3f}"
              f"  median interval width of the top layers {np.median(widths):.4g}")  # fmt: skip
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
