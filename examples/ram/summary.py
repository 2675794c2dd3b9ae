"""The statistics of the studies: means over tasks and seeds, paired differences to a reference method."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from macattr.restoration.evaluate import paired_bootstrap


def average(metrics: Dict[str, Dict[str, List[float]]], key: str = "psnr") -> float:
    """The mean over tasks of the mean over images."""
    return float(np.mean([np.mean(values[key]) for values in metrics.values()]))


def summarise(runs: Dict[str, List[Dict[str, Any]]], reference: str, budget: int) -> Dict[str, Any]:
    """Per method: PSNR/SSIM per task and averaged (mean ± std over seeds), the paired difference to the
    ``reference`` method per test image (means over seeds; 95 % bootstrap interval), its choice's overlap with
    the reference's, the share of parameters trained; and every run as recorded."""
    tasks = list(runs[reference][0]["metrics"])

    def per_image(method: str, task: Optional[str]) -> np.ndarray:
        """PSNR per test image, mean over seeds (and over tasks when ``task`` is None)."""
        chosen = tasks if task is None else [task]
        return np.mean([[r["metrics"][t]["psnr"] for t in chosen] for r in runs[method]], axis=(0, 1))

    reference_layers = set(runs[reference][0]["layers"])
    summary: Dict[str, Any] = {"reference": reference, "budget": budget, "methods": {}}
    for method, seeds in runs.items():
        entry: Dict[str, Any] = {"seeds": len(seeds), "tasks": {}}
        for task in [*tasks, "average"]:
            psnr = [np.mean(r["metrics"][task]["psnr"]) if task != "average" else average(r["metrics"]) for r in seeds]
            ssim = [np.mean(r["metrics"][task]["ssim"]) if task != "average" else average(r["metrics"], "ssim")
                    for r in seeds]  # fmt: skip
            entry["tasks"][task] = {"psnr": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)),
                                    "ssim": float(np.mean(ssim)), "ssim_std": float(np.std(ssim)),
                                    "psnr_per_seed": [float(v) for v in psnr]}  # fmt: skip
            if method != reference:
                entry["tasks"][task]["reference_minus_this"] = paired_bootstrap(
                    per_image(reference, None if task == "average" else task),
                    per_image(method, None if task == "average" else task),
                )
        overlaps = [len(reference_layers & set(r["layers"])) for r in seeds]
        entry.update(layers=[r["layers"] for r in seeds], overlap_with_reference=overlaps,
                     trainable_fraction=float(np.mean([r["trainable_fraction"] for r in seeds])),
                     per_image_psnr={t: [round(float(v), 3) for v in per_image(method, t)] for t in tasks})  # fmt: skip
        summary["methods"][method] = entry
    return summary


__all__ = ["average", "summarise"]
