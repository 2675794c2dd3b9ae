"""The studies on top of the pipeline: which layers to fine-tune, the pre-training mask ratio, and how stable
MAC's ranking is.

    OUT/ablate/<method>/seed<s>/   the ablation's runs: model.pt, layers.txt, metrics.json (per-image PSNR/SSIM)
    OUT/ratios/r<percent>/         the mask-ratio ablation: pre-training, MAC scores and fine-tuning runs per ratio
    OUT/robustness/                MAC rankings with other seeds, images per task and N
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np

from macattr.ranking.methods import get_method
from macattr.scores import LayerScores, resolve_k

from .pipeline import (
    Run,
    analyze,
    finetune,
    load_model,
    metrics,
    pretrain,
    rank,
    ratio_folder,
    test_sets,
    trained_share,
)
from .report import ablation_figure, record_results, timed
from .summary import average, summarise

WHOLE = {"full": "every candidate layer", "none": "no fine-tuning"}  # the ablation's two bounds


def _choices(run: Run, method: str, seed: int, scores_of: Callable[[str, int], LayerScores]) -> List[str]:
    """The layers ``method`` fine-tunes at ``seed``: its top k in the preset's budget (all for "full", none for
    "none")."""
    if method == "none":
        return []
    candidates = scores_of("mac", 0).names  # MAC scores every candidate layer
    if method == "full":
        return list(candidates)
    if run.preset.budget == "parameters":
        return scores_of(method, seed).top_k(run.k, "parameters", model=load_model(run, pretrain(run)))
    return scores_of(method, seed).top_k(resolve_k(run.k, len(candidates)))


def _ablation_names(run: Run) -> tuple:
    """Where an ablation goes (its folder, its key in results.json, its figure): the layer budget's, or the
    parameter budget's beside it."""
    if run.preset.budget == "parameters":
        return "ablate_parameters", "ablation_parameters", "ablation_parameters.png"
    return "ablate", "ablation", "ablation.png"


def ablate(run: Run) -> Dict[str, Any]:
    """The same budget (of layers, or of parameters) chosen by every method, fine-tuned ``run.seeds`` times
    each; one table."""
    started = time.perf_counter()
    mac = analyze(run)
    pretrained = pretrain(run)
    name, key, figure = _ablation_names(run)
    folder = run.out / name

    def scores_of(method: str, seed: int) -> LayerScores:
        if method == "mac":
            return mac
        rankings = run.out / "ablate"  # the rankings do not depend on the budget: both ablations share them
        if get_method(method).random_draw:  # a fresh draw per seed; the other rankings are shared by the seeds
            return rank(run, pretrained, method, rankings / f"rank_{method}_seed{seed}.json", seed=seed)
        return rank(run, pretrained, method, rankings / f"rank_{method}.json")

    sets = test_sets(run)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for method in run.preset.ablation:
        for seed in range(1 if method == "none" else run.seeds):
            names = _choices(run, method, seed, scores_of)
            where = folder / method / f"seed{seed}"
            if method == "none":
                result, fraction = metrics(run, where, sets, pretrained), 0.0
            else:
                network = finetune(run, names, where, seed)
                result, fraction = metrics(run, where, sets, network), trained_share(network)
            runs.setdefault(method, []).append({"seed": seed, "layers": names, "trainable_fraction": fraction,
                                                "metrics": result})  # fmt: skip
        run.log(f"ablate {method:18s}: mean PSNR {np.mean([average(r['metrics']) for r in runs[method]]):.3f} dB")
    summary = summarise(runs, reference="mac", budget=len(runs["mac"][0]["layers"]))
    summary["budget_unit"] = run.preset.budget
    timed(run, name, started)
    results = record_results(run, {key: summary, "test_images": {t: len(d["gt"]) for t, d in sets.items()}})
    ablation_figure(summary, run.out / figure)
    return results


def ratios(run: Run) -> Dict[str, Any]:
    """The mask-ratio ablation: pre-train at each ratio, MAC with the matching r, fine-tune MAC's top k."""
    started = time.perf_counter()
    sets = test_sets(run)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for ratio in run.preset.ratios:
        names = analyze(run, ratio).top_k(run.k)
        for seed in range(run.seeds):
            where = ratio_folder(run, ratio) / "ablate" / "mac" / f"seed{seed}"
            network = finetune(run, names, where, seed, ratio)
            runs.setdefault(f"r={ratio}", []).append({"seed": seed, "layers": names,
                                                      "trainable_fraction": trained_share(network),
                                                      "metrics": metrics(run, where, sets, network)})  # fmt: skip
    reference = f"r={run.preset.pretrain.mask_ratio}"
    summary = summarise(runs, reference=reference, budget=resolve_k(run.k, len(analyze(run))))
    timed(run, "ratios", started)
    return record_results(run, {"ratios": summary})


def robustness(run: Run) -> Dict[str, Any]:
    """How MAC's ranking moves with the threshold seed, the images per task and N (against the analysis)."""
    started = time.perf_counter()
    reference = analyze(run)
    pretrained = pretrain(run)
    cfg, variants = run.preset.analyze, run.preset.robustness
    folder = run.out / "robustness"
    cases = [(f"{n} images per task", 0, dict(per_task=n)) for n in variants.per_task]
    cases += [(f"N = {n}", 0, dict(n_steps=n)) for n in variants.n_steps]
    cases += [(f"seed {s}", s, {}) for s in variants.seeds]
    table = {}
    for label, seed, change in cases:
        path = folder / (label.replace(" ", "_").replace("=", "") + ".json")
        scores = rank(run, pretrained, "mac", path, seed=seed, **change)
        table[label] = {"spearman": reference.spearman(scores), "kendall": reference.kendall(scores),
                        "top_k_overlap": reference.overlap(scores, run.k), "images": scores.images}  # fmt: skip
        run.log(f"robustness {label:22s}: Spearman {table[label]['spearman']:.3f}  "
                f"top-k overlap {table[label]['top_k_overlap']:.2f}")  # fmt: skip
    reference_label = f"seed 0, {cfg.per_task} images per task, N = {cfg.n_steps}"
    timed(run, "robustness", started)
    return record_results(run, {"robustness": {"reference": reference_label, "against_reference": table}})
