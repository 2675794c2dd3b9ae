"""How far the step sum is from the integral: the three step rules at N = 25 … 400 against a converged reference.

    PYTHONPATH=. python benchmarks/bench_convergence.py --json convergence.json --plot convergence.png
    python benchmarks/bench_convergence.py --networks demo --steps 25,50 --reference-start 400   # a quick look

(``PYTHONPATH=.``, from the repository root: the medium SwinIR comes from the RAM example.)

For each network, one image in float64: the reference is MAC with the trapezoid rule at N = ``--reference-start``,
doubled until doubling N changes no layer's score by more than ``--tolerance`` (relative); then every rule at
every N of ``--steps``, with each layer's relative error against the reference (largest and mean over the
layers) and the top-10 % overlap with the reference's top 10 % (|A ∩ B| / k). The segment rules (``gauss2``,
``gauss3``) run at the most segments whose passes per image do not exceed the step rules' N + 1. Results are
written to ``--json`` after each run, and a rerun with the same settings resumes from it.

Networks: ``demo`` (the demo network after the demo's mask pre-training, one 32 × 32 noisy photograph crop),
``swinir-medium`` (the RAM example's medium SwinIR, 121 layers; pre-trained with ``--medium-weights``, else
random weights) on a 32 × 32 noisy crop, and ``resnet`` (a ResNet-18 layout of width 16, random weights, in eval
mode, class 0's logit) on a 32 × 32 photograph crop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from resumable import resumable_results
from torch import Tensor, nn

from bench_networks import pretrained_demo, ram_medium, resnet18
from macattr import LayerScores, rank_layers
from macattr.restoration.degradations import degrade
from macattr.restoration.images import sample_images
from macattr.segments import SegmentRule, points_per_image
from macattr.vocabulary import STEP_RULES

RULES = (*STEP_RULES, "gauss2", "gauss3")
COLOURS = dict(zip(RULES, ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00")))
ROUNDING = 1e-9  # relative differences below this are float rounding, not the step sum's error
Case = Tuple[nn.Module, Tensor, Dict[str, Any]]  # the model, one image (1, C, H, W), rank_layers options


def _noisy_crop(seed: int = 0) -> Tensor:
    clean = sample_images(32)[0][None]
    return degrade(clean, "noise", 25.0, torch.Generator().manual_seed(seed)).clamp(0, 1)


def _cases(args: argparse.Namespace) -> Dict[str, Callable[[], Case]]:
    return {
        "demo": lambda: (pretrained_demo(args.work / "demo"), _noisy_crop(), {}),
        "swinir-medium": lambda: (ram_medium("swinir", args.medium_weights), _noisy_crop(), {}),
        "resnet": lambda: (_seeded(resnet18, 16), sample_images(32)[1][None], {"target": 0}),
    }


def _seeded(build: Callable[..., nn.Module], *args: Any) -> nn.Module:
    """``build(*args)`` with torch's generator seeded (0): the same random weights in every run and resume."""
    torch.manual_seed(0)
    return build(*args)


def _scores(case: Case, n_steps: int, rule: str) -> LayerScores:
    model, x, options = case
    return rank_layers(model.double(), [x.double()], n_steps=n_steps, rule=rule, seed=0, progress=False, **options)


def _largest_change(a: LayerScores, b: LayerScores) -> float:
    return max(abs(a[n] - b[n]) / abs(b[n]) for n in b)


def reference(case: Case, start: int, tolerance: float, limit: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """The trapezoid at N, 2N, ... until doubling changes no score by more than ``tolerance`` (relative)."""
    n, previous = start, _scores(case, start, "trapezoid")
    while True:
        finer = _scores(case, 2 * n, "trapezoid")
        change = _largest_change(previous, finer)
        log(f"  reference: N = {n} -> {2 * n}, largest relative change {change:.2e}")
        n, previous = 2 * n, finer
        if change <= tolerance or n >= limit:
            return {"n_steps": n, "change": change, "converged": change <= tolerance, "scores": dict(finer)}


def compare(scores: LayerScores, exact: Dict[str, float], k: float = 0.1) -> Dict[str, float]:
    """Relative errors of ``scores`` against ``exact`` (largest, mean), the top-k overlap with its top k, and how
    the scores' own error estimate relates to the true error: its largest value, the share of layers whose
    estimate is below their true error (``understated``), the median and smallest ratio of estimate to true
    error over the layers, and the largest completeness gap at the input."""
    errors = np.array([abs(scores[n] - exact[n]) / abs(exact[n]) for n in exact])
    truth = LayerScores(exact, "mac")
    top, true_top = scores.top_k(k), truth.top_k(k)
    estimated = np.array([scores.error(n) / abs(exact[n]) for n in exact])
    resolved = errors > ROUNDING  # a layer the rule gets exactly (a linear head) differs only by float rounding
    ratios = estimated[resolved] / errors[resolved]
    return {"max_error": float(errors.max()), "mean_error": float(errors.mean()),
            "overlap": len(set(top) & set(true_top)) / len(true_top), "k": len(true_top),
            "estimate_max": float(estimated.max()), "understated": float((estimated < errors - ROUNDING).mean()),
            "ratio_median": float(np.median(ratios)) if len(ratios) else None,
            "ratio_min": float(ratios.min()) if len(ratios) else None,
            "input_gap": float(scores.input_gaps.max())}  # fmt: skip


def run(args: argparse.Namespace, results: Dict[str, Any], save: Callable[[], None]) -> None:
    for network in args.networks:
        entry = results["networks"].setdefault(network, {"runs": {}})
        case = _cases(args)[network]()
        entry["layers"] = len(_scores(case, 1, "left"))
        if "reference" not in entry:
            print(f"{network}: {entry['layers']} layers", flush=True)
            started = time.perf_counter()
            entry["reference"] = reference(case, args.reference_start, args.tolerance, args.reference_max, print)
            entry["reference"]["seconds"] = time.perf_counter() - started
            save()
        exact = entry["reference"]["scores"]
        for rule in RULES:
            for n in args.steps:
                key = f"{rule} {n}"
                if "estimate_max" in entry["runs"].get(key, {}):
                    continue
                segments = n if rule in STEP_RULES else max(1, n // SegmentRule.named(rule).points_per_segment)
                entry["runs"][key] = {"rule": rule, "n_steps": segments, "passes": points_per_image(rule, segments),
                                      **compare(_scores(case, segments, rule), exact)}  # fmt: skip
                save()


def table(results: Dict[str, Any]) -> str:
    lines = [f"{'network':14s} {'layers':>6s} {'reference N':>11s} {'rule':9s} {'N':>4s} {'passes':>6s} "
             f"{'max error':>9s} {'mean error':>10s} {'top-10 %':>8s} {'max estimate':>12s} {'understated':>11s} "
             f"{'estimate/error':>14s} {'input gap':>9s}"]  # fmt: skip
    for network, entry in results["networks"].items():
        ref = entry["reference"]
        for run_ in entry["runs"].values():
            passes = run_.get("passes", run_["n_steps"] + 1)
            line = (f"{network:14s} {entry['layers']:6d} {ref['n_steps']:11d} {run_['rule']:9s} "
                    f"{run_['n_steps']:4d} {passes:6d} {100 * run_['max_error']:8.2f}% "
                    f"{100 * run_['mean_error']:9.2f}% "
                    f"{run_['overlap'] * run_['k']:4.0f}/{run_['k']:<3d}")  # fmt: skip
            if "estimate_max" in run_:  # median (smallest) ratio of the estimate to the true error
                line += (f" {100 * run_['estimate_max']:11.2f}% {100 * run_['understated']:10.0f}% "
                         f"{_ratio(run_['ratio_median']):>7s} ({_ratio(run_['ratio_min'])}) "
                         f"{100 * run_['input_gap']:8.2f}%")  # fmt: skip
            lines.append(line)
    return "\n".join(lines)


def _ratio(value: Optional[float]) -> str:
    """A ratio of estimate to error, or "–" where every layer was exact."""
    return "–" if value is None else f"{value:.2g}"


def plot(results: Dict[str, Any], path: Path) -> None:
    """The largest and the mean relative error of each rule against the passes per image, a panel per network."""
    from matplotlib.figure import Figure

    networks = list(results["networks"])
    fig = Figure(figsize=(4.2 * len(networks), 3.6))
    axes = fig.subplots(1, len(networks), squeeze=False, sharey=True)
    for ax, network in zip(axes[0], networks):
        entry = results["networks"][network]
        for rule in RULES:
            runs = sorted((r for r in entry["runs"].values() if r["rule"] == rule), key=lambda r: r["n_steps"])
            if not runs:
                continue
            passes = [r.get("passes", r["n_steps"] + 1) for r in runs]
            colour = COLOURS[rule]
            ax.loglog(passes, [100 * r["max_error"] for r in runs], "o-", color=colour, label=f"{rule}, largest")
            ax.loglog(passes, [100 * r["mean_error"] for r in runs], "s--", color=colour, ms=3, label=f"{rule}, mean")
        ticks = sorted({r["n_steps"] + 1 for r in entry["runs"].values() if r["rule"] in STEP_RULES})
        ax.set_title(f"{network} ({entry['layers']} layers)")
        ax.set_xticks(ticks, [str(n) for n in ticks], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("forward and backward passes per image")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("relative error of a layer's score (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=(len(labels) + 1) // 2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # the legend below the panels covers no line
    fig.savefig(path, dpi=120)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="demo,swinir-medium,resnet", help="comma-separated (default: all)")
    parser.add_argument("--steps", default="25,50,100,200,400", help="N of the rules (default 25,50,100,200,400)")
    parser.add_argument("--reference-start", type=int, default=1600, help="first N of the reference (default 1600)")
    parser.add_argument("--reference-max", type=int, default=51200, help="largest N of the reference")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative change on doubling N")
    parser.add_argument("--medium-weights", type=Path, help="OUT/pretrain/model.pt of the medium RAM preset")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_convergence"), help="the demo's weights")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="results file (written after each run; resumed)")
    parser.add_argument("--plot", type=Path, help="figure of the errors against N")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: the table (and --plot) of the networks of these results files, such as "
                        "those of processes that ran different --networks side by side")  # fmt: skip
    args = parser.parse_args(argv)
    if args.combine:
        return _combine(args.combine, args.plot)
    args.networks = [n for n in args.networks.split(",") if n]
    unknown = sorted(set(args.networks) - set(_cases(args)))
    if unknown:
        parser.error(f"--networks: unknown {unknown}; choose from {sorted(_cases(args))}")
    try:
        args.steps = [int(n) for n in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if min(args.steps) < 1 or args.reference_start < 1 or not 0 < args.tolerance < 1:
        parser.error("--steps and --reference-start must be >= 1 and --tolerance in (0, 1)")
    torch.set_num_threads(args.threads)
    settings = {"steps": args.steps, "reference_start": args.reference_start, "tolerance": args.tolerance,
                "medium_weights": str(args.medium_weights), "torch": torch.__version__}  # fmt: skip
    results, save = resumable_results(args.json, settings, args.threads)

    run(args, results, save)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float64, one image per network")
    print(table(results))
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _combine(files: List[Path], figure: Optional[Path]) -> int:
    results: Dict[str, Any] = {"networks": {}}
    for file in files:
        document = json.loads(file.read_text())
        print(f"{file}: {document['settings']}, {document['threads']} thread(s)")
        results["networks"].update(document["networks"])
    print(table(results))
    if figure:
        plot(results, figure)
        print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
