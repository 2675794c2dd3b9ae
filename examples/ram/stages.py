"""The stages of the RAM pipeline; each reads and writes files under ``OUT``, and a rerun skips finished work.

OUT/pretrain/model.pt             mask pre-trained network (checkpoint.pt while it runs)
OUT/analyze/scores.json           MAC layer scores (+ RAM's filter_*.txt, heatmap.png, profile.png)
OUT/finetune/model.pt             fine-tuned network: MAC's top-k layers trained
OUT/ablate/<method>/seed<s>/      the ablation's runs: model.pt, layers.txt, metrics.json (per-image PSNR/SSIM)
OUT/ratios/r<percent>/            the mask-ratio ablation: pre-training, MAC scores and fine-tuning runs per ratio
OUT/robustness/                   MAC rankings with other seeds, images per task and N
OUT/results.json, results.md      everything measured, as data and as tables; ablation.png

Beside each network, score and metrics file, ``<name>.settings.json`` holds the settings it is made with
(written when it is begun; they include those of the network it comes from); a rerun with other settings
refuses to reuse or resume it (use another OUT) instead of mixing results.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

import macattr
from macattr.restoration import write_ram_files
from macattr.restoration.data import analysis_batches, evaluation_sets, training_batch
from macattr.restoration.evaluate import paired_bootstrap, per_image_quality, restore, restore_with_twin_masks
from macattr.restoration.images import photographs
from macattr.restoration.masking import mask_pretraining_loss, relative_l1, whole_image_l1
from macattr.restoration.networks import ARCHITECTURES
from macattr.restoration.train import load_weights, save_atomic, train, write_text
from macattr.scores import LayerScores, resolve_k
from macattr.seeds import derive_seed

LOSSES: Dict[str, Callable] = {"l1": whole_image_l1, "relative_l1": relative_l1}
RANKED = ("mac", "ig", "conductance", "gradnorm", "last", "uniform", "random")  # methods that choose k layers
EVAL_PIXELS = 16 * 48 * 48  # pixels per evaluation pass: larger passes are slower on a CPU (measured)


@dataclass
class Run:
    """Where a pipeline run writes, and with which settings."""

    out: Path
    arch: str
    settings: Dict[str, Any]
    preset_name: str
    device: torch.device
    seed: int = 0
    seeds: int = 1
    data_root: Optional[Path] = None
    progress: bool = True
    notes: List[str] = field(default_factory=list)

    @property
    def bf16(self) -> bool:
        return bool(self.settings["bf16"]) and self.device.type == "cuda"

    @property
    def k(self) -> float:
        return self.settings["k"][self.arch]

    def log(self, text: str) -> None:
        print(text, flush=True)


def build_model(run: Run) -> nn.Module:
    torch.manual_seed(run.seed)
    return ARCHITECTURES[run.arch](**run.settings["networks"][run.arch]).to(run.device)


def load_model(run: Run, path: Path) -> nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run the stage that writes it first")
    return load_weights(build_model(run), path).to(run.device).eval()


def _record(run: Run, update: Dict[str, Any]) -> Dict[str, Any]:
    """Merge ``update`` into OUT/results.json (atomically) and rewrite OUT/results.md."""
    path = run.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(results.get(key), dict):
            results[key].update(value)
        else:
            results[key] = value
    results.update(preset=run.preset_name, arch=run.arch, device=_device_name(run.device), seed=run.seed,
                   settings=run.settings)  # fmt: skip
    results["notes"] = sorted(set(results.get("notes", [])) | set(run.notes))
    write_text(path, json.dumps(results, indent=1) + "\n")
    write_text(run.out / "results.md", results_markdown(results))
    return results


def _flat(settings: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested settings as one level, ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: Dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _record_of(path: Path) -> Path:
    return path.with_name(path.stem + ".settings.json")


def settings_of(path: Path) -> Optional[Dict[str, Any]]:
    """The settings ``path`` was made with (its ``<name>.settings.json``), None for a file made without one."""
    record = _record_of(path)
    return json.loads(record.read_text()) if record.exists() else None


def reusable(path: Path, made_with: Dict[str, Any]) -> bool:
    """Whether ``path`` is finished; refuses (ValueError) to go on with a file, finished or interrupted, that was
    begun with other settings. The settings are recorded beside it as ``<name>.settings.json`` before it is made;
    a file made before such records existed is reused as it is."""
    now, before = json.loads(json.dumps(made_with)), settings_of(path)
    if before is None:
        if not path.exists():
            write_text(_record_of(path), json.dumps(now, indent=1) + "\n")
        return path.exists()
    old, new = _flat(before), _flat(now)
    changed = [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key)]  # fmt: skip
    if changed:
        again = f"delete {path.parent} (or {path.name} and {_record_of(path).name} in it) to make it anew"
        raise ValueError(f"{path} was made with other settings ({'; '.join(changed)}); use another --out, or {again}")
    return path.exists()


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _timed(run: Run, stage: str, started: float) -> None:
    _record(run, {"timings_s": {stage: round(time.perf_counter() - started, 1)}})


def _ratio_folder(run: Run, ratio: Optional[float]) -> Path:
    """Where the runs of a pre-training mask ratio live: OUT itself for the preset's ratio."""
    if ratio is None or ratio == run.settings["pretrain"]["mask_ratio"]:
        return run.out
    return run.out / "ratios" / f"r{round(100 * ratio)}"


def pretrain(run: Run, ratio: Optional[float] = None) -> Path:
    """Mask pre-training: pixel masks at the preset's ratio (or ``ratio``), L1 on the masked pixels, Adam + cosine."""
    cfg = run.settings["pretrain"]
    ratio = cfg["mask_ratio"] if ratio is None else ratio
    final = _ratio_folder(run, ratio) / "pretrain" / "model.pt"
    size, batch = run.settings["size"][run.arch], run.settings["batch"]
    made_with = {"pretrain": {**cfg, "mask_ratio": ratio}, "network": run.settings["networks"][run.arch],
                 "arch": run.arch, "size": size, "batch": batch, "seed": run.seed}  # fmt: skip
    if reusable(final, made_with):
        return final
    started = time.perf_counter()
    photos = photographs("train")
    model = build_model(run)
    train(model, model.parameters(), lambda t: training_batch(photos, size, batch, run.seed, t),
          mask_pretraining_loss(ratio, cfg["patch_size"], run.seed),
          steps=cfg["steps"], lr=cfg["lr"], lr_min=cfg["lr_min"], checkpoint=final.parent / "checkpoint.pt",
          device=run.device, bf16=run.bf16, progress=run.progress, log=run.log, name=f"pretrain r={ratio}")  # fmt: skip
    save_atomic(final, model.state_dict())
    _timed(run, str(final.parent.relative_to(run.out)), started)
    return final


def _analysis_settings(run: Run, method: str, seed: int, cfg: Dict[str, Any], weights: Path) -> Dict[str, Any]:
    return {"method": method, "seed": seed, "analyze": cfg, "tasks": run.settings["tasks"],
            "pretrained": settings_of(weights)}  # fmt: skip


def _rank(run: Run, weights: Path, method: str, path: Path, seed: int = 0, **analysis: Any) -> LayerScores:
    """``method``'s scores of the pre-trained network ``weights`` over the analysis batches (``analysis``
    overrides the preset's settings); cached in ``path``, resumable from ``path`` with ``.ckpt.json``."""
    cfg = {**run.settings["analyze"], **analysis}
    if reusable(path, _analysis_settings(run, method, seed, cfg, weights)):
        return LayerScores.load(path)
    model = load_model(run, weights)
    batches = analysis_batches(run.settings["tasks"], photographs("train"), run.data_root, cfg["size"],
                               cfg["per_task"], run.seed)  # fmt: skip
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        scores = macattr.rank_layers(
            model, batches, method, n_steps=cfg["n_steps"], mask_ratio=cfg["mask_ratio"],
            sharpness=cfg["sharpness"], seed=seed, samples_per_group=cfg["per_task"], group="task",
            progress=run.progress, checkpoint=path.with_suffix(".ckpt.json"),
        )  # fmt: skip
    scores.save(path)
    return scores


def analyze(run: Run, ratio: Optional[float] = None) -> LayerScores:
    """MAC analysis of the pre-trained network (r = the pre-training's mask ratio); scores, RAM files, figures."""
    ratio = run.settings["pretrain"]["mask_ratio"] if ratio is None else ratio
    folder = _ratio_folder(run, ratio) / "analyze"
    weights = pretrain(run, ratio)
    made_with = _analysis_settings(run, "mac", 0, {**run.settings["analyze"], "mask_ratio": ratio}, weights)
    if reusable(folder / "scores.json", made_with):
        return LayerScores.load(folder / "scores.json")
    started = time.perf_counter()
    scores = _rank(run, weights, "mac", folder / "scores.json", mask_ratio=ratio)
    write_ram_files(scores, folder)
    for kind in ("heatmap", "profile"):
        macattr.plot_layer_importance(scores, kind=kind, top_k=run.k).savefig(folder / f"{kind}.png", dpi=110)
    top = scores.top_k(run.k)
    run.log(f"analyze r={ratio}: {scores.images} images, {len(scores)} layers; top {len(top)}: {', '.join(top)}")
    _timed(run, str(folder.relative_to(run.out)), started)
    return scores


def finetune(run: Run, names: Optional[List[str]] = None, folder: Optional[Path] = None, seed: int = 0,
             ratio: Optional[float] = None) -> Path:  # fmt: skip
    """Fine-tune on whole images with only ``names`` trainable (default: MAC's top k); Adam + cosine.

    ``seed`` picks the order of the training batches; ``ratio`` the pre-trained network to start from.
    """
    folder = folder or run.out / "finetune"
    final = folder / "model.pt"
    if names is None:
        names = analyze(run, ratio).top_k(run.k)
    weights = pretrain(run, ratio)
    cfg, size, batch = run.settings["finetune"], run.settings["size"][run.arch], run.settings["batch"]
    made_with = {"finetune": cfg, "size": size, "batch": batch, "seed": seed, "layers": names,
                 "pretrained": settings_of(weights)}  # fmt: skip
    if reusable(final, made_with):
        return final
    started = time.perf_counter()
    photos = photographs("train")
    model = load_model(run, weights)
    with macattr.freeze_except(model, names) as trainable:
        run.log(f"{folder.relative_to(run.out)}: {len(names)} layers, {trainable.trainable:,} of "
                f"{trainable.total:,} parameters trainable ({100 * trainable.fraction:.1f} %)")  # fmt: skip
        train(model, trainable, lambda t: training_batch(photos, size, batch, derive_seed(seed, "finetune"), t),
              LOSSES[cfg["loss"]], steps=cfg["steps"], lr=cfg["lr"], lr_min=cfg["lr_min"],
              checkpoint=folder / "checkpoint.pt", device=run.device, bf16=run.bf16, progress=run.progress,
              log=run.log, name=str(folder.relative_to(run.out)))  # fmt: skip
        fraction = trainable.fraction
    save_atomic(final, model.state_dict())
    write_text(folder / "layers.txt", "\n".join(names) + "\n")
    write_text(folder / "trainable.json", json.dumps({"fraction": fraction}) + "\n")
    _timed(run, str(folder.relative_to(run.out)), started)
    return final


def _evaluation_sets(run: Run) -> Dict[str, Dict[str, Tensor]]:
    cfg = run.settings["evaluate"]
    sets, notes = evaluation_sets(run.settings["tasks"], photographs("test"), run.data_root, cfg["size"],
                                  cfg["count"], derive_seed(run.seed, "evaluate"))  # fmt: skip
    run.notes.extend(notes)
    return sets


def _metrics(run: Run, folder: Path, sets: Dict[str, Dict[str, Tensor]], weights: Path,
             twin_masks: bool = False) -> Dict[str, Dict[str, List[float]]]:  # fmt: skip
    """Per-image PSNR/SSIM per task of the network ``weights``; cached in folder/metrics.json (metrics_twin.json
    with twin masks) together with the settings of that network."""
    path = folder / ("metrics_twin.json" if twin_masks else "metrics.json")
    made_with = {"network": settings_of(weights), "evaluate": run.settings["evaluate"],
                 "tasks": run.settings["tasks"], "twin_masks": twin_masks}  # fmt: skip
    if reusable(path, made_with):
        return json.loads(path.read_text())
    model = load_model(run, weights)
    metrics = {}
    for task, data in sets.items():
        if twin_masks:
            output = restore_with_twin_masks(model, data["lq"], run.device, run.seed, bf16=run.bf16)
        else:
            pixels = data["lq"].shape[-1] * data["lq"].shape[-2]
            output = restore(model, data["lq"], run.device, bf16=run.bf16, batch=max(1, EVAL_PIXELS // pixels))
        metrics[task] = {k: [round(v, 5) for v in vs] for k, vs in per_image_quality(output, data["gt"]).items()}
    write_text(path, json.dumps(metrics) + "\n")
    return metrics


def _means(metrics: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, float]]:
    return {task: {k: float(np.mean(v)) for k, v in values.items()} for task, values in metrics.items()}


def evaluate(run: Run) -> Dict[str, Any]:
    """PSNR/SSIM per task of the degraded input, the pre-trained network (twin complementary masks) and the
    MAC-fine-tuned network, over every test tile."""
    started = time.perf_counter()
    sets = _evaluation_sets(run)
    table = {task: {"input": _means({task: per_image_quality(d["lq"], d["gt"])})[task]} for task, d in sets.items()}
    pretrained = _means(_metrics(run, run.out / "pretrain", sets, pretrain(run), twin_masks=True))
    finetuned = _means(_metrics(run, run.out / "finetune", sets, finetune(run)))
    for task in sets:
        table[task].update(pretrained=pretrained[task], finetuned=finetuned[task], images=len(sets[task]["gt"]))
        row = table[task]
        run.log(f"evaluate {task:18s} PSNR input {row['input']['psnr']:.2f}  pretrained "
                f"{row['pretrained']['psnr']:.2f}  finetuned {row['finetuned']['psnr']:.2f} dB")  # fmt: skip
    _timed(run, "evaluate", started)
    return _record(run, {"tasks": table})


def _choices(run: Run, method: str, seed: int, scores_of: Callable[[str, int], LayerScores]) -> List[str]:
    """The layers ``method`` fine-tunes at ``seed``: its top-k (all for "full", none for "none")."""
    if method == "none":
        return []
    candidates = scores_of("mac", 0).names  # MAC scores every candidate layer
    if method == "full":
        return list(candidates)
    return scores_of(method, seed).top_k(resolve_k(run.k, len(candidates)))


def ablate(run: Run) -> Dict[str, Any]:
    """The same layer budget chosen by every method, fine-tuned ``run.seeds`` times each; one table."""
    started = time.perf_counter()
    mac = analyze(run)
    pretrained = pretrain(run)
    folder = run.out / "ablate"

    def scores_of(method: str, seed: int) -> LayerScores:
        if method == "mac":
            return mac
        if method == "random":  # a fresh draw per seed; every other ranking is made once and shared by the seeds
            return _rank(run, pretrained, method, folder / f"rank_random_seed{seed}.json", seed=seed)
        return _rank(run, pretrained, method, folder / f"rank_{method}.json")

    sets = _evaluation_sets(run)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for method in run.settings["ablation"]:
        for seed in range(1 if method == "none" else run.seeds):
            names = _choices(run, method, seed, scores_of)
            where = folder / method / f"seed{seed}"
            if method == "none":
                metrics, fraction = _metrics(run, where, sets, pretrained), 0.0
            else:
                metrics = _metrics(run, where, sets, finetune(run, names, where, seed))
                fraction = json.loads((where / "trainable.json").read_text())["fraction"]
            runs.setdefault(method, []).append({"seed": seed, "layers": names, "trainable_fraction": fraction,
                                                "metrics": metrics})  # fmt: skip
        run.log(f"ablate {method:12s}: mean PSNR {np.mean([_average(r['metrics']) for r in runs[method]]):.3f} dB")
    summary = summarise(runs, reference="mac", budget=resolve_k(run.k, len(mac)))
    _timed(run, "ablate", started)
    results = _record(run, {"ablation": summary, "test_images": {t: len(d["gt"]) for t, d in sets.items()}})
    _ablation_figure(summary, run.out / "ablation.png")
    return results


def ratios(run: Run) -> Dict[str, Any]:
    """The mask-ratio ablation: pre-train at each ratio, MAC with the matching r, fine-tune MAC's top k."""
    started = time.perf_counter()
    sets = _evaluation_sets(run)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for ratio in run.settings["ratios"]:
        names = analyze(run, ratio).top_k(run.k)
        for seed in range(run.seeds):
            where = _ratio_folder(run, ratio) / "ablate" / "mac" / f"seed{seed}"
            metrics = _metrics(run, where, sets, finetune(run, names, where, seed, ratio))
            fraction = json.loads((where / "trainable.json").read_text())["fraction"]
            runs.setdefault(f"r={ratio}", []).append({"seed": seed, "layers": names, "trainable_fraction": fraction,
                                                      "metrics": metrics})  # fmt: skip
    reference = f"r={run.settings['pretrain']['mask_ratio']}"
    summary = summarise(runs, reference=reference, budget=resolve_k(run.k, len(analyze(run))))
    _timed(run, "ratios", started)
    return _record(run, {"ratios": summary})


def robustness(run: Run) -> Dict[str, Any]:
    """How MAC's ranking moves with the threshold seed, the images per task and N (against the analysis)."""
    started = time.perf_counter()
    reference = analyze(run)
    pretrained = pretrain(run)
    cfg, variants = run.settings["analyze"], run.settings["robustness"]
    folder = run.out / "robustness"
    cases = [(f"{n} images per task", dict(per_task=n)) for n in variants["per_task"]]
    cases += [(f"N = {n}", dict(n_steps=n)) for n in variants["n_steps"]]
    cases += [(f"seed {s}", dict(seed=s)) for s in variants["seeds"]]
    table = {}
    for label, change in cases:
        seed = change.pop("seed", 0)
        path = folder / (label.replace(" ", "_").replace("=", "") + ".json")
        scores = _rank(run, pretrained, "mac", path, seed=seed, **change)
        table[label] = {"spearman": reference.spearman(scores), "kendall": reference.kendall(scores),
                        "top_k_overlap": reference.overlap(scores, run.k), "images": scores.images}  # fmt: skip
        run.log(f"robustness {label:22s}: Spearman {table[label]['spearman']:.3f}  "
                f"top-k overlap {table[label]['top_k_overlap']:.2f}")  # fmt: skip
    reference_label = f"seed 0, {cfg['per_task']} images per task, N = {cfg['n_steps']}"
    _timed(run, "robustness", started)
    return _record(run, {"robustness": {"reference": reference_label, "against_reference": table}})


def _average(metrics: Dict[str, Dict[str, List[float]]], key: str = "psnr") -> float:
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
            psnr = [np.mean(r["metrics"][task]["psnr"]) if task != "average" else _average(r["metrics"]) for r in seeds]
            ssim = [np.mean(r["metrics"][task]["ssim"]) if task != "average" else _average(r["metrics"], "ssim")
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


def _ablation_figure(summary: Dict[str, Any], path: Path) -> None:
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
             "| method | seeds | " + " | ".join(tasks) + " | Δ average | layers shared with "
             f"{summary['reference']} | parameters trained |", "|" + " --- |" * (len(tasks) + 5)]  # fmt: skip
    for method, entry in methods.items():
        cells = [f"{entry['tasks'][t]['psnr']:.2f} ± {entry['tasks'][t]['psnr_std']:.2f}" for t in tasks]
        gap = entry["tasks"]["average"].get("reference_minus_this")
        delta = "–" if gap is None else f"{gap['mean']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
        shared = f"{np.mean(entry['overlap_with_reference']):.1f} of {summary['budget']}"
        lines.append(f"| {method} | {entry['seeds']} | " + " | ".join(cells) +
                     f" | {delta} | {shared} | {100 * entry['trainable_fraction']:.1f} % |")  # fmt: skip
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
