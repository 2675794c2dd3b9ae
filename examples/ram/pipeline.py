"""The four stages of the RAM pipeline: mask pre-training, MAC analysis, fine-tuning, evaluation.

Each stage reads and writes files under ``OUT`` and runs the stages it needs first; a finished file is reused and
an interrupted one resumed, under the rule of [`records`][examples.ram.records]:

    OUT/pretrain/model.pt      mask pre-trained network (checkpoint.pt while it runs)
    OUT/analyze/scores.json    MAC layer scores (+ RAM's filter_*.txt, heatmap.png, profile.png)
    OUT/finetune/model.pt      fine-tuned network: MAC's top-k layers trained
    OUT/*/metrics.json         per-image PSNR/SSIM of a network on every test task
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

import macattr
from macattr.paths import MaskAttributionPath
from macattr.restoration import write_ram_files
from macattr.restoration.data import analysis_batches, evaluation_sets, training_batch
from macattr.restoration.evaluate import per_image_quality, restore, restore_with_twin_masks
from macattr.restoration.images import photographs
from macattr.restoration.masking import mask_pretraining_loss, relative_l1, whole_image_l1
from macattr.restoration.networks import ARCHITECTURES
from macattr.restoration.train import save_atomic, train, write_text
from macattr.scores import LayerScores
from macattr.seeds import derive_seed
from macattr.weights import load_weights

from .presets import Analysis, Architecture, Preset
from .records import finished, made_with
from .report import mean_quality, record_results, timed

LOSSES: Dict[str, Callable] = {"l1": whole_image_l1, "relative_l1": relative_l1}
EVAL_PIXELS = 16 * 48 * 48  # pixels per evaluation pass: larger passes are slower on a CPU (measured)


@dataclass
class Run:
    """Where a pipeline run writes, and with which settings."""

    out: Path
    arch: str
    preset: Preset
    device: torch.device
    seed: int = 0
    seeds: int = 1
    data_root: Optional[Path] = None
    progress: bool = True
    notes: List[str] = field(default_factory=list)

    @property
    def architecture(self) -> Architecture:
        return self.preset.architectures[self.arch]

    @property
    def k(self) -> float:
        return self.architecture.k

    @property
    def bf16(self) -> bool:
        return self.preset.bf16 and self.device.type == "cuda"

    def log(self, text: str) -> None:
        print(text, flush=True)


def build_model(run: Run) -> nn.Module:
    """The run's network, freshly initialised from its seed."""
    torch.manual_seed(run.seed)
    return ARCHITECTURES[run.arch](**run.architecture.network).to(run.device)


def load_model(run: Run, path: Path) -> nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run the stage that writes it first")
    return load_weights(build_model(run), path).to(run.device).eval()


def ratio_folder(run: Run, ratio: Optional[float]) -> Path:
    """Where the runs of a pre-training mask ratio live: OUT itself for the preset's ratio."""
    if ratio is None or ratio == run.preset.pretrain.mask_ratio:
        return run.out
    return run.out / "ratios" / f"r{round(100 * ratio)}"


def pretrain(run: Run, ratio: Optional[float] = None) -> Path:
    """Mask pre-training: pixel masks at the preset's ratio (or ``ratio``), L1 on the masked pixels, Adam + cosine."""
    cfg = run.preset.pretrain if ratio is None else replace(run.preset.pretrain, mask_ratio=ratio)
    final = ratio_folder(run, cfg.mask_ratio) / "pretrain" / "model.pt"
    size, batch = run.architecture.size, run.preset.batch
    record = {"pretrain": cfg, "network": run.architecture.network, "arch": run.arch, "size": size, "batch": batch,
              "seed": run.seed}  # fmt: skip
    if finished(final, record):
        return final
    started = time.perf_counter()
    photos = photographs("train")
    model = build_model(run)
    train(model, model.parameters(), lambda t: training_batch(photos, size, batch, run.seed, t),
          mask_pretraining_loss(cfg.mask_ratio, cfg.patch_size, run.seed),
          steps=cfg.steps, lr=cfg.lr, lr_min=cfg.lr_min, checkpoint=final.parent / "checkpoint.pt",
          device=run.device, bf16=run.bf16, progress=run.progress, log=run.log,
          name=f"pretrain r={cfg.mask_ratio}")  # fmt: skip
    save_atomic(final, model.state_dict())
    timed(run, str(final.parent.relative_to(run.out)), started)
    return final


def rank(run: Run, weights: Path, method: str, path: Path, seed: int = 0, **analysis: Any) -> LayerScores:
    """``method``'s scores of the pre-trained network ``weights`` over the analysis batches (``analysis``
    overrides fields of the preset's [`Analysis`][examples.ram.presets.Analysis]); kept in ``path``, resumed
    from ``path`` with ``.ckpt.json``."""
    cfg = replace(run.preset.analyze, **analysis)
    record = {"method": method, "seed": seed, "analyze": cfg, "tasks": run.preset.tasks,
              "pretrained": made_with(weights)}  # fmt: skip
    if finished(path, record):
        return LayerScores.load(path)
    model = load_model(run, weights)
    batches = analysis_batches(run.preset.tasks, photographs("train"), run.data_root, cfg.size, cfg.per_task, run.seed)
    settings = macattr.RankSettings(method, n_steps=cfg.n_steps, seed=seed, samples_per_group=cfg.per_task,
                                    **_mask_options(method, cfg))  # fmt: skip
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        scores = macattr.rank_layers(model, batches, settings=settings, group="task", progress=run.progress,
                                     checkpoint=path.with_suffix(".ckpt.json"))  # fmt: skip
    scores.save(path)
    return scores


def _mask_options(method: str, cfg: Analysis) -> Dict[str, float]:
    """The analysis' r and δ for a method that integrates along the mask attribute path, nothing for the others."""
    if isinstance(macattr.RankSettings(method).integration_path(), MaskAttributionPath):
        return {"mask_ratio": cfg.mask_ratio, "sharpness": cfg.sharpness}
    return {}


def analyze(run: Run, ratio: Optional[float] = None) -> LayerScores:
    """MAC analysis of the pre-trained network (r = the pre-training's mask ratio); scores, RAM files, figures."""
    ratio = run.preset.pretrain.mask_ratio if ratio is None else ratio
    folder = ratio_folder(run, ratio) / "analyze"
    started = time.perf_counter()
    scores = rank(run, pretrain(run, ratio), "mac", folder / "scores.json", mask_ratio=ratio)
    if not (folder / "profile.png").exists():  # made once, with the scores
        write_ram_files(scores, folder)
        for kind in ("heatmap", "profile"):
            macattr.plot_layer_importance(scores, kind=kind, top_k=run.k).savefig(folder / f"{kind}.png", dpi=110)
        top = scores.top_k(run.k)
        run.log(f"analyze r={ratio}: {scores.images} images, {len(scores)} layers; top {len(top)}: {', '.join(top)}")
        timed(run, str(folder.relative_to(run.out)), started)
    return scores


def finetune(run: Run, names: Optional[List[str]] = None, folder: Optional[Path] = None, seed: int = 0,
             ratio: Optional[float] = None) -> Path:  # fmt: skip
    """Fine-tune on whole images with only ``names`` trainable (default: MAC's top k); Adam + cosine.

    ``seed`` picks the order of the training batches; ``ratio`` the pre-trained network to start from. Beside
    the network, ``layers.txt`` names the layers and ``trainable.json`` gives the share of parameters trained.
    """
    folder = folder or run.out / "finetune"
    final = folder / "model.pt"
    if names is None:
        names = analyze(run, ratio).top_k(run.k)
    weights = pretrain(run, ratio)
    cfg, size, batch = run.preset.finetune, run.architecture.size, run.preset.batch
    record = {"finetune": cfg, "size": size, "batch": batch, "seed": seed, "layers": names,
              "pretrained": made_with(weights)}  # fmt: skip
    if finished(final, record):
        return final
    started = time.perf_counter()
    photos = photographs("train")
    model = load_model(run, weights)
    with macattr.freeze_except(model, names) as trainable:
        run.log(f"{folder.relative_to(run.out)}: {len(names)} layers, {trainable.trainable:,} of "
                f"{trainable.total:,} parameters trainable ({100 * trainable.fraction:.1f} %)")  # fmt: skip
        batches = derive_seed(seed, "finetune")
        train(model, trainable, lambda t: training_batch(photos, size, batch, batches, t), LOSSES[cfg.loss],
              steps=cfg.steps, lr=cfg.lr, lr_min=cfg.lr_min, checkpoint=folder / "checkpoint.pt", device=run.device,
              bf16=run.bf16, progress=run.progress, log=run.log, name=str(folder.relative_to(run.out)))  # fmt: skip
        fraction = trainable.fraction
    write_text(folder / "layers.txt", "\n".join(names) + "\n")
    write_text(folder / "trainable.json", json.dumps({"fraction": fraction}) + "\n")
    save_atomic(final, model.state_dict())  # last: a finished network has its layers and share beside it
    timed(run, str(folder.relative_to(run.out)), started)
    return final


def trained_share(network: Path) -> float:
    """The share of parameters a fine-tuning trained (``trainable.json`` beside its network)."""
    return json.loads((network.parent / "trainable.json").read_text())["fraction"]


def test_sets(run: Run) -> Dict[str, Dict[str, Tensor]]:
    """The test sets of the run's tasks (notes on stand-ins and missing paired data go into the run's notes)."""
    cfg = run.preset.evaluate
    sets, notes = evaluation_sets(run.preset.tasks, photographs("test"), run.data_root, cfg.size, cfg.count,
                                  derive_seed(run.seed, "evaluate"))  # fmt: skip
    run.notes.extend(notes)
    if cfg.tiles is not None:
        sets = {task: {key: images[: cfg.tiles] for key, images in data.items()} for task, data in sets.items()}
    return sets


def metrics(run: Run, folder: Path, sets: Dict[str, Dict[str, Tensor]], weights: Path,
            twin_masks: bool = False) -> Dict[str, Dict[str, List[float]]]:  # fmt: skip
    """Per-image PSNR/SSIM per task of the network ``weights``; kept in folder/metrics.json (metrics_twin.json
    with twin masks) with the record of that network."""
    path = folder / ("metrics_twin.json" if twin_masks else "metrics.json")
    record = {"network": made_with(weights), "evaluate": run.preset.evaluate, "tasks": run.preset.tasks,
              "twin_masks": twin_masks}  # fmt: skip
    if finished(path, record):
        return json.loads(path.read_text())
    model = load_model(run, weights)
    result = {}
    for task, data in sets.items():
        if twin_masks:
            output = restore_with_twin_masks(model, data["lq"], run.device, run.seed, bf16=run.bf16)
        else:
            pixels = data["lq"].shape[-1] * data["lq"].shape[-2]
            output = restore(model, data["lq"], run.device, bf16=run.bf16, batch=max(1, EVAL_PIXELS // pixels))
        result[task] = {k: [round(v, 5) for v in vs] for k, vs in per_image_quality(output, data["gt"]).items()}
    write_text(path, json.dumps(result) + "\n")
    return result


def evaluate(run: Run) -> Dict[str, Any]:
    """PSNR/SSIM per task of the degraded input, the pre-trained network (twin complementary masks) and the
    MAC-fine-tuned network, over every test tile."""
    started = time.perf_counter()
    sets = test_sets(run)
    table = {task: {"input": mean_quality({task: per_image_quality(d["lq"], d["gt"])})[task]}
             for task, d in sets.items()}  # fmt: skip
    pretrained = mean_quality(metrics(run, run.out / "pretrain", sets, pretrain(run), twin_masks=True))
    finetuned = mean_quality(metrics(run, run.out / "finetune", sets, finetune(run)))
    for task in sets:
        table[task].update(pretrained=pretrained[task], finetuned=finetuned[task], images=len(sets[task]["gt"]))
        row = table[task]
        run.log(f"evaluate {task:18s} PSNR input {row['input']['psnr']:.2f}  pretrained "
                f"{row['pretrained']['psnr']:.2f}  finetuned {row['finetuned']['psnr']:.2f} dB")  # fmt: skip
    timed(run, "evaluate", started)
    return record_results(run, {"tasks": table})
