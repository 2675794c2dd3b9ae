"""What a run reports: OUT/results.json (every result as data), OUT/results.md (the tables) and the figures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
import torch

from macattr.records import json_value
from macattr.restoration.train import write_text

if TYPE_CHECKING:
    from .pipeline import Run


def record_results(run: Run, update: Dict[str, Any]) -> Dict[str, Any]:
    """Merge ``update`` into OUT/results.json (atomically) and rewrite OUT/results.md."""
    path = run.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(results.get(key), dict):
            results[key].update(value)
        else:
            results[key] = value
    results.update(preset=run.preset.name, arch=run.arch, device=_device_name(run.device), seed=run.seed,
                   settings=json_value(run.preset))  # fmt: skip
    results["notes"] = sorted(set(results.get("notes", [])) | set(run.notes))
    write_text(path, json.dumps(results, indent=1) + "\n")
    write_text(run.out / "results.md", results_markdown(results))
    return results


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def timed(run: Run, stage: str, started: float) -> None:
    """Record the seconds since ``started`` as the time of ``stage``."""
    record_results(run, {"timings_s": {stage: round(time.perf_counter() - started, 1)}})


def mean_quality(metrics: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, float]]:
    """Per task, the mean over the test images of each metric."""
    return {task: {k: float(np.mean(v)) for k, v in values.items()} for task, values in metrics.items()}


def ablation_figure(summary: Dict[str, Any], path: Path) -> None:
    """Mean PSNR over tasks per method (± std over seeds), and the reference's paired advantage with its interval."""
    from matplotlib.figure import Figure

    # the untuned network is far below the rest: named in a note so that the others' differences stay visible
    tuned = [m for m in summary["methods"] if m != "none"]
    average = [summary["methods"][m]["tasks"]["average"] for m in tuned]
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.errorbar(range(len(tuned)), [a["psnr"] for a in average], yerr=[a["psnr_std"] for a in average], fmt="o",
                  color="#0072B2", capsize=3)  # fmt: skip
    left.set_xticks(range(len(tuned)), tuned, rotation=40, ha="right")
    left.set_ylabel("PSNR (dB), mean over tasks")
    left.set_title("fine-tuned with each method's layers (± std over seeds)")
    if "none" in summary["methods"]:
        untuned = summary["methods"]["none"]["tasks"]["average"]["psnr"]
        left.text(0.02, 0.04, f"none (not fine-tuned): {untuned:.2f} dB", transform=left.transAxes, fontsize=8)
    others = [m for m in summary["methods"] if m != summary["reference"]]
    gaps = [summary["methods"][m]["tasks"]["average"]["reference_minus_this"] for m in others]
    right.errorbar(range(len(others)), [g["mean"] for g in gaps],
                   yerr=[[g["mean"] - g["low"] for g in gaps], [g["high"] - g["mean"] for g in gaps]], fmt="o",
                   color="#D55E00", capsize=3)  # fmt: skip
    right.axhline(0, color="0.5", lw=0.8)
    right.set_yscale("symlog", linthresh=0.1)  # linear within ±0.1 dB, logarithmic beyond
    for axes in (left, right):
        axes.margins(y=0.1)  # the highest and lowest points and their bars stay inside
    right.set_xticks(range(len(others)), others, rotation=40, ha="right")
    right.set_ylabel(f"{summary['reference']} − method (dB, symlog)")
    right.set_title(f"{summary['reference'].upper()}'s paired advantage, 95 % bootstrap interval")
    figure.savefig(path, dpi=110)


def _cell(entry: Optional[Dict[str, float]]) -> str:
    return "–" if entry is None else f"{entry['psnr']:.2f} / {entry['ssim']:.4f}"


def _summary_table(summary: Dict[str, Any], title: str) -> List[str]:
    methods = summary["methods"]
    tasks = list(next(iter(methods.values()))["tasks"])
    lines = ["", f"## {title}", "", f"PSNR (dB), mean ± std over seeds; Δ = {summary['reference']} − method, mean "
             "over test images of the paired difference (seed means) with its 95 % bootstrap interval.", "",
             "| method | seeds | " + " | ".join(tasks) + " |", "|" + " --- |" * (len(tasks) + 2)]  # fmt: skip
    for method, entry in methods.items():
        cells = [f"{entry['tasks'][t]['psnr']:.2f} ± {entry['tasks'][t]['psnr_std']:.2f}" for t in tasks]
        lines.append(f"| {method} | {entry['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", "The selection of each method against the reference, and the paired difference of the average:", "",
              f"| method | Δ average | layers | layers shared with {summary['reference']} | parameters trained |",
              "|" + " --- |" * 5]  # fmt: skip
    for method, entry in methods.items():
        gap = entry["tasks"]["average"].get("reference_minus_this")
        delta = "–" if gap is None else f"{gap['mean']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
        shared = f"{np.mean(entry['overlap_with_reference']):.1f} of {summary['budget']}"
        count = f"{np.mean([len(layers) for layers in entry['layers']]):.1f}"
        lines.append(f"| {method} | {delta} | {count} | {shared} | {100 * entry['trainable_fraction']:.1f} % |")
    lines += ["", "SSIM, mean ± std over seeds.", "", "| method | seeds | " + " | ".join(tasks) + " |",
              "|" + " --- |" * (len(tasks) + 2)]  # fmt: skip
    for method, entry in methods.items():
        cells = [f"{entry['tasks'][t]['ssim']:.4f} ± {entry['tasks'][t]['ssim_std']:.4f}" for t in tasks]
        lines.append(f"| {method} | {entry['seeds']} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: Dict[str, Any]) -> str:
    """OUT/results.md: the tables of results.json."""
    lines = [f"# RAM example: preset `{results.get('preset')}`, {results.get('arch')}, device {results.get('device')}",
             "", "PSNR (dB) / SSIM, mean over the test images of each task.", ""]  # fmt: skip
    tasks = results.get("tasks", {})
    if tasks:
        lines += ["| task | test images | input | pre-trained (twin masks) | fine-tuned (MAC top-k) |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {t} | {r.get('images', '–')} | {_cell(r.get('input'))} | {_cell(r.get('pretrained'))} | "
                  f"{_cell(r.get('finetuned'))} |" for t, r in tasks.items()]  # fmt: skip
    if results.get("ablation"):
        lines += _summary_table(results["ablation"], "Ablation: which layers to fine-tune")
    if results.get("ablation_parameters"):
        lines += _summary_table(results["ablation_parameters"], "Ablation at an equal budget of parameters")
    if results.get("ratios"):
        lines += _summary_table(results["ratios"], "Ablation: the pre-training mask ratio (MAC top-k fine-tuned)")
    if results.get("robustness"):
        robust = results["robustness"]
        lines += ["", "## Robustness of the MAC ranking", "", f"Against the analysis ({robust['reference']}).", "",
                  "| change | Spearman | Kendall | top-k overlap (Jaccard) |", "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {label} | {r['spearman']:.3f} | {r['kendall']:.3f} | {r['top_k_overlap']:.2f} |"
                  for label, r in robust["against_reference"].items()]  # fmt: skip
    timings = results.get("timings_s", {})
    if timings:
        lines += ["", "## Timings", "", "| stage | seconds |", "| --- | --- |"]
        lines += [f"| {stage} | {seconds} |" for stage, seconds in timings.items()]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


__all__ = ["ablation_figure", "mean_quality", "record_results", "results_markdown", "timed"]
