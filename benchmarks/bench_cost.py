"""The paper's top 10 % for a fraction of its cost: cheaper analyses against the full one, side by side.

    PYTHONPATH=. python benchmarks/bench_cost.py --medium-weights runs/medium/pretrain/model.pt --json cost.json
    python benchmarks/bench_cost.py --networks swin2sr --per-task 2           # a look in minutes

(``PYTHONPATH=.``, from the repository root: the medium networks come from the RAM example.)

The full analysis is the paper's: 10 images per task × 5 tasks (noise σ 15/25/50, blur σ 2, JPEG 50; 32 × 32
crops of the bundled training photographs), N = 200, the left rule: 50 × 201 = 10,050 forward+backward passes.
Each cheaper analysis is measured in the same run: its passes (analysed images × (N + 1)), its wall time, and
how many of the full analysis' top 10 % it selects (plus the Spearman correlation of all scores). Results go to
``--json`` after each analysis, and a rerun with the same settings resumes from it.

Networks: ``swinir-medium`` (the RAM example's medium SwinIR, 121 layers; pre-trained with
``--medium-weights``), ``promptir-medium`` (the example's PromptIR-style network, random weights) and
``swin2sr`` (Hugging Face transformers' Swin2SR, random weights, 54 layers).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from resumable import resumable_results
from torch import nn

from bench_networks import ram_medium, swin2sr
from macattr import LayerScores, UntilStable, rank_layers
from macattr.restoration.data import analysis_batches
from macattr.restoration.images import photographs

TASKS = ("noise15", "noise25", "noise50", "blur2", "jpeg50")


@dataclass(frozen=True)
class Analysis:
    """One way to analyse: images per task, N, the step rule, and optionally a stability threshold."""

    label: str
    per_task: int
    n_steps: int
    rule: str = "left"
    until_stable: Optional[float] = None

    def options(self) -> Dict[str, Any]:
        stable = None if self.until_stable is None else UntilStable(self.until_stable)
        return {"n_steps": self.n_steps, "rule": self.rule, "samples_per_group": self.per_task,
                "until_stable": stable}  # fmt: skip


def analyses(per_task: int) -> List[Analysis]:
    """The full analysis (first) and the cheaper ones, for ``per_task`` images per task in the full one."""
    return [
        Analysis(f"full: {per_task}/task, N = 200, left", per_task, 200),
        Analysis(f"{max(1, per_task // 5)}/task, N = 200, left", max(1, per_task // 5), 200),
        Analysis(f"{per_task}/task, N = 25, trapezoid", per_task, 25, "trapezoid"),
        Analysis(f"{max(2, per_task * 2 // 5)}/task, N = 50, trapezoid", max(2, per_task * 2 // 5), 50, "trapezoid"),
        Analysis(f"until stable (0.95), N = 50, trapezoid, ≤ {per_task}/task", per_task, 50, "trapezoid", 0.95),
    ]


def _networks(args: argparse.Namespace) -> Dict[str, Callable[[], nn.Module]]:
    return {
        "swinir-medium": lambda: ram_medium("swinir", args.medium_weights),
        "promptir-medium": lambda: ram_medium("promptir", None),
        "swin2sr": swin2sr,
    }


def measure(model: nn.Module, batches: List[Dict[str, Any]], analysis: Analysis, output: Optional[str],
            full: Optional[LayerScores]) -> Dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    scores = rank_layers(model, batches, group="task", seed=0, progress=False, output=output, **analysis.options())
    seconds = time.perf_counter() - started
    row = {"label": analysis.label, "images": scores.images, "passes": scores.images * (analysis.n_steps + 1),
           "seconds": seconds, "top": scores.top_k(0.1), "scores": dict(scores)}  # fmt: skip
    if full is not None:
        truth = full.top_k(0.1)
        row.update(found=len(set(row["top"]) & set(truth)), k=len(truth), spearman=scores.spearman(full))
    return row


def run(args: argparse.Namespace, results: Dict[str, Any], save: Callable[[], None]) -> None:
    batches = analysis_batches(TASKS, photographs("train"), None, 32, args.per_task, 0)
    for network in args.networks:
        model = _networks(args)[network]()
        output = "reconstruction" if network == "swin2sr" else None
        rows = results["networks"].setdefault(network, {})
        full = None
        for analysis in analyses(args.per_task):
            if analysis.label not in rows:
                rows[analysis.label] = measure(model, batches, analysis, output, full)
                save()
                print(f"{network}: {analysis.label}: {rows[analysis.label]['seconds']:.1f} s", flush=True)
            if full is None:
                full = LayerScores(rows[analysis.label]["scores"], "mac")


def table(results: Dict[str, Any]) -> str:
    lines = [f"{'network':16s} {'analysis':52s} {'images':>6s} {'passes':>7s} {'share':>6s} {'seconds':>8s} "
             f"{'top 10 %':>8s} {'Spearman':>8s}"]  # fmt: skip
    for network, rows in results["networks"].items():
        full = next(iter(rows.values()))
        for row in rows.values():
            found = f"{row['found']}/{row['k']}" if "found" in row else "–"
            spearman = f"{row['spearman']:.4f}" if "spearman" in row else "–"
            share = row["passes"] / full["passes"]
            lines.append(f"{network:16s} {row['label']:52s} {row['images']:6d} {row['passes']:7d} {share:6.3f} "
                         f"{row['seconds']:8.1f} {found:>8s} {spearman:>8s}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="swinir-medium,promptir-medium,swin2sr", help="comma-separated")
    parser.add_argument("--per-task", type=int, default=10, help="images per task of the full analysis (10)")
    parser.add_argument("--medium-weights", type=Path, help="OUT/pretrain/model.pt of the medium RAM preset")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="results file (written after each analysis; resumed)")
    args = parser.parse_args(argv)
    args.networks = [n for n in args.networks.split(",") if n]
    unknown = sorted(set(args.networks) - set(_networks(args)))
    if unknown:
        parser.error(f"--networks: unknown {unknown}; choose from {sorted(_networks(args))}")
    if args.per_task < 2:
        parser.error("--per-task must be >= 2 (the bootstrap needs two images per task)")
    torch.set_num_threads(args.threads)
    settings = {"per_task": args.per_task, "tasks": TASKS, "medium_weights": str(args.medium_weights),
                "torch": torch.__version__}  # fmt: skip
    results, save = resumable_results(args.json, settings, args.threads)

    run(args, results, save)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
