"""The five stages of the RAM pipeline; each reads and writes files under ``OUT`` and can be rerun.

OUT/pretrain/model.pt      mask pre-trained network (checkpoint.pt while it runs)
OUT/analyze/scores.json    MAC layer scores (+ RAM's filter_*.txt, heatmap.png; rank checkpoint)
OUT/finetune/model.pt      fine-tuned network: only the top-k layers trained
OUT/ablate/<method>/       the same fine-tuning with layers chosen by IG, uniform, random, or all layers
OUT/results.json, .md      PSNR/SSIM per task, timings, device, preset, notes
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

import macattr
from macattr.restoration import write_ram_files
from macattr.restoration.data import analysis_batches, evaluation_sets, training_batch
from macattr.restoration.evaluate import quality, restore, restore_with_twin_masks
from macattr.restoration.images import photographs
from macattr.restoration.masking import mask_pretraining_loss, whole_image_l1
from macattr.restoration.networks import ARCHITECTURES
from macattr.restoration.train import load_weights, save_atomic, train, write_text
from macattr.scores import LayerScores, resolve_k

ABLATION_METHODS = ("mac", "ig", "uniform", "random", "full")


@dataclass
class Run:
    """Where a pipeline run writes, and with which settings."""

    out: Path
    arch: str
    settings: Dict[str, Any]
    preset_name: str
    device: torch.device
    seed: int = 0
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
    results.update(preset=run.preset_name, arch=run.arch, device=_device_name(run.device), seed=run.seed)
    results["notes"] = sorted(set(results.get("notes", [])) | set(run.notes))
    write_text(path, json.dumps(results, indent=2) + "\n")
    write_text(run.out / "results.md", results_markdown(results))
    return results


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _timed(run: Run, stage: str, started: float) -> None:
    _record(run, {"timings_s": {stage: round(time.perf_counter() - started, 1)}})


def pretrain(run: Run) -> Path:
    """Mask pre-training: pixel masks at the preset's ratio, L1 on the masked pixels, Adam + cosine."""
    final = run.out / "pretrain" / "model.pt"
    if final.exists():
        run.log(f"pretrain: {final} exists, skipped")
        return final
    started = time.perf_counter()
    cfg, size, batch = run.settings["pretrain"], run.settings["size"][run.arch], run.settings["batch"]
    photos = photographs("train")
    model = build_model(run)
    train(model, model.parameters(), lambda t: training_batch(photos, size, batch, run.seed, t),
          mask_pretraining_loss(cfg["mask_ratio"], cfg["patch_size"], run.seed),
          steps=cfg["steps"], lr=cfg["lr"], lr_min=cfg["lr_min"], checkpoint=final.parent / "checkpoint.pt",
          device=run.device, bf16=run.bf16, progress=run.progress, log=run.log, name="pretrain")  # fmt: skip
    save_atomic(final, model.state_dict())
    _timed(run, "pretrain", started)
    return final


def _rank(run: Run, model: nn.Module, method: str, folder: Path) -> LayerScores:
    cfg = run.settings["analyze"]
    batches = analysis_batches(run.settings["tasks"], photographs("train"), run.data_root, cfg["size"],
                               cfg["per_task"], run.seed)  # fmt: skip
    return macattr.rank_layers(
        model, batches, method, n_steps=cfg["n_steps"], mask_ratio=cfg["mask_ratio"], sharpness=cfg["sharpness"],
        seed=run.seed, samples_per_group=cfg["per_task"], group="task",
        progress=run.progress, checkpoint=folder / f"rank_{method}.json",
    )  # fmt: skip


def analyze(run: Run) -> LayerScores:
    """MAC analysis of the pre-trained network with the paper's defaults; writes scores, RAM files, heatmap."""
    folder = run.out / "analyze"
    if (folder / "scores.json").exists():
        run.log(f"analyze: {folder / 'scores.json'} exists, skipped")
        return LayerScores.load(folder / "scores.json")
    started = time.perf_counter()
    model = load_model(run, run.out / "pretrain" / "model.pt")
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        scores = _rank(run, model, "mac", folder)
    scores.save(folder / "scores.json")
    write_ram_files(scores, folder)
    figure = macattr.plot_layer_importance(scores, top_k=run.k)
    figure.savefig(folder / "heatmap.png", dpi=110)
    top = scores.top_k(run.k)
    run.log(f"analyze: {scores.images} images, {len(scores)} layers; top {len(top)}: {', '.join(top)}")
    _timed(run, "analyze", started)
    return scores


def finetune(run: Run, names: Optional[List[str]] = None, folder: Optional[Path] = None) -> Path:
    """Fine-tune on whole images with only ``names`` trainable (default: MAC's top k); L1, Adam + cosine."""
    folder = folder or run.out / "finetune"
    final = folder / "model.pt"
    if final.exists():
        run.log(f"finetune: {final} exists, skipped")
        return final
    started = time.perf_counter()
    if names is None:
        names = analyze(run).top_k(run.k)
    cfg, size, batch = run.settings["finetune"], run.settings["size"][run.arch], run.settings["batch"]
    photos = photographs("train")
    model = load_model(run, run.out / "pretrain" / "model.pt")
    offset = 10_000_019  # fine-tuning batches differ from pre-training ones
    with macattr.freeze_except(model, names) as trainable:
        run.log(f"{folder.name}: {len(names)} layers, {trainable.trainable:,} of {trainable.total:,} "
                f"parameters trainable ({100 * trainable.fraction:.1f} %)")  # fmt: skip
        train(model, trainable, lambda t: training_batch(photos, size, batch, run.seed + offset, t), whole_image_l1,
              steps=cfg["steps"], lr=cfg["lr"], lr_min=cfg["lr_min"], checkpoint=folder / "checkpoint.pt",
              device=run.device, bf16=run.bf16, progress=run.progress, log=run.log, name=folder.name)  # fmt: skip
    save_atomic(final, model.state_dict())
    write_text(folder / "layers.txt", "\n".join(names) + "\n")
    if folder == run.out / "finetune":
        _timed(run, "finetune", started)
    return final


def _evaluation_sets(run: Run) -> Dict[str, Dict[str, Tensor]]:
    cfg = run.settings["evaluate"]
    sets, notes = evaluation_sets(run.settings["tasks"], photographs("test"), run.data_root, cfg["size"], cfg["count"],
                                  run.seed + 12345)  # fmt: skip
    run.notes.extend(notes)
    for note in notes:
        run.log(f"note: {note}")
    return sets


def evaluate(run: Run) -> Dict[str, Any]:
    """PSNR/SSIM per task of the degraded input, the pre-trained model (twin complementary masks) and the
    fine-tuned model."""
    started = time.perf_counter()
    pretrained = load_model(run, run.out / "pretrain" / "model.pt")
    finetuned = load_model(run, run.out / "finetune" / "model.pt")
    table = {}
    for task, data in _evaluation_sets(run).items():
        table[task] = {
            "input": quality(data["lq"], data["gt"]),
            "pretrained": quality(
                restore_with_twin_masks(pretrained, data["lq"], run.device, run.seed, bf16=run.bf16), data["gt"]
            ),  # fmt: skip
            "finetuned": quality(restore(finetuned, data["lq"], run.device, bf16=run.bf16), data["gt"]),
        }
        row = table[task]
        run.log(f"evaluate {task:18s} PSNR input {row['input']['psnr']:.2f}  pretrained "
                f"{row['pretrained']['psnr']:.2f}  finetuned {row['finetuned']['psnr']:.2f} dB")  # fmt: skip
    _timed(run, "evaluate", started)
    return _record(run, {"tasks": table})


def ablate(run: Run) -> Dict[str, Any]:
    """Fine-tune the same number of layers chosen by MAC, IG, uniform and random, and all layers; one table."""
    started = time.perf_counter()
    mac = analyze(run)
    count = resolve_k(run.k, len(mac))
    pretrained = load_model(run, run.out / "pretrain" / "model.pt")
    chosen = {"mac": mac.top_k(count), "full": list(macattr.candidate_layers(pretrained))}
    for method in ("ig", "uniform", "random"):
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
            chosen[method] = _rank(run, pretrained, method, run.out / "ablate").top_k(count)
    sets = _evaluation_sets(run)
    table: Dict[str, Dict[str, Any]] = {}
    for method in ABLATION_METHODS:
        folder = run.out / "finetune" if method == "mac" else run.out / "ablate" / method
        model = load_model(run, finetune(run, chosen[method], folder))
        for task, data in sets.items():
            table.setdefault(task, {})[method] = quality(restore(model, data["lq"], run.device, bf16=run.bf16),
                                                         data["gt"])  # fmt: skip
        mean = sum(table[t][method]["psnr"] for t in sets) / len(sets)
        run.log(f"ablate {method:8s}: {len(chosen[method])} layers, mean PSNR {mean:.2f} dB")
    _timed(run, "ablate", started)
    return _record(run, {"ablation": table, "ablation_layers": {m: chosen[m] for m in ABLATION_METHODS}})


def _cell(entry: Optional[Dict[str, float]]) -> str:
    return "–" if entry is None else f"{entry['psnr']:.2f} / {entry['ssim']:.4f}"


def results_markdown(results: Dict[str, Any]) -> str:
    """OUT/results.md: the tables of results.json."""
    lines = [f"# RAM example: preset `{results.get('preset')}`, {results.get('arch')}, device {results.get('device')}",
             "", "PSNR (dB) / SSIM, mean over the test images of each task.", ""]  # fmt: skip
    tasks = results.get("tasks", {})
    if tasks:
        lines += ["| task | input | pre-trained (twin masks) | fine-tuned (MAC top-k) |", "| --- | --- | --- | --- |"]
        lines += [f"| {t} | {_cell(r.get('input'))} | {_cell(r.get('pretrained'))} | {_cell(r.get('finetuned'))} |"
                  for t, r in tasks.items()]  # fmt: skip
    ablation = results.get("ablation", {})
    if ablation:
        methods = list(next(iter(ablation.values())))
        lines += ["", "## Ablation: which layers to fine-tune", "",
                  "| task | " + " | ".join(methods) + " |", "|" + " --- |" * (len(methods) + 1)]  # fmt: skip
        lines += [f"| {t} | " + " | ".join(_cell(r.get(m)) for m in methods) + " |" for t, r in ablation.items()]
        means = [sum(r[m]["psnr"] for r in ablation.values()) / len(ablation) for m in methods]
        lines += ["| mean PSNR | " + " | ".join(f"{v:.2f}" for v in means) + " |"]
        counts = results.get("ablation_layers", {})
        lines += ["", "Layers fine-tuned: " + ", ".join(f"{m} {len(counts.get(m, []))}" for m in methods) + "."]
    timings = results.get("timings_s", {})
    if timings:
        lines += ["", "## Timings", "", "| stage | seconds |", "| --- | --- |"]
        lines += [f"| {stage} | {seconds} |" for stage, seconds in timings.items()]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"
