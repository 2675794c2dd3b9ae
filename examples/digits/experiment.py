"""Which layers to adapt with LoRA, beyond restoration: a small vision transformer on scikit-learn's digits.

A ViT (Hugging Face ``ViTForImageClassification``: 8 × 8 images, 2 × 2 patches, 4 blocks) is trained on the
digits, then adapted with LoRA to two shifted tasks, each from a few hundred training images:

- ``shifted``: the same digits with inverted intensities and Gaussian noise (σ = 0.15);
- ``relabelled``: the same images with every label moved on by one (0 → 1, ..., 9 → 0).

Every method chooses the layers LoRA adapts at the same budget, the same share of the network's parameters
(``budget="parameters"``, among its Linear and Conv2d layers, the ones LoRA adapts); the classifier head trains in every
run (``modules_to_save``), since the relabelled task needs a new head. Methods: MAC on the token path (patches
masked whole, the logit of each image's own class, ``target="label"``), gradnorm and Fisher (the cross-entropy
of the new task), first-k, last-k and random, and full fine-tuning as the bound. Every choice is fine-tuned from
the same pre-trained network with ``--seeds`` seeds (the order of the training batches, LoRA's initialisation and
the random choice), and scored on every test image of the task.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import macattr
from macattr.files import write_text_atomic
from macattr.peft import lora_config
from macattr.restoration.evaluate import paired_bootstrap
from macattr.seeds import seeded_generator

METHODS = ("mac", "gradnorm", "fisher", "first", "last", "random")
TASKS = ("shifted", "relabelled")


@dataclass(frozen=True)
class Settings:
    """Everything the experiment's numbers depend on."""

    seeds: int = 5
    train_images: int = 300  # of each shifted task
    pretrain_epochs: int = 30
    finetune_epochs: int = 40
    budget: float = 0.15  # share of the network's parameters whose layers LoRA adapts
    rank: int = 4
    lr: float = 3e-3
    n_steps: int = 50
    analysis_images: int = 100
    noise: float = 0.15


def digits() -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled digits, (N, 1, 8, 8) in [0, 1] with labels, split 1000 / 797 by a fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=seeded_generator(0, "digits split"))
    train, test = order[:1000], order[1000:]
    return images[train], labels[train], images[test], labels[test]


def shift(task: str, images: Tensor, labels: Tensor, seed: int, noise: float = 0.15) -> Tuple[Tensor, Tensor]:
    """The images and labels of a shifted task (``noise``: the standard deviation of the shifted task's noise)."""
    if task == "shifted":
        noise = torch.randn(images.shape, generator=seeded_generator(seed, "digits noise")) * noise
        return (1.0 - images + noise).clamp(0.0, 1.0), labels
    if task == "relabelled":
        return images, (labels + 1) % 10
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def vision_transformer() -> nn.Module:
    """The ViT, freshly initialised (seed 0)."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=4,
                                    num_attention_heads=4, intermediate_size=64, num_labels=10,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return transformers.ViTForImageClassification(config)


def train(model: nn.Module, images: Tensor, labels: Tensor, epochs: int, lr: float, seed: int) -> nn.Module:
    """Adam on the cross-entropy of the trainable parameters, batches of 64 in a seeded order."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    model.train()
    generator = seeded_generator(seed, "digits batches")
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(64):
            loss = F.cross_entropy(model(images[batch]).logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def correct(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """Per test image, 1 when the model's class is right."""
    with torch.no_grad():
        return (model(images).logits.argmax(1) == labels).numpy().astype(float)


def rankings(model: nn.Module, images: Tensor, labels: Tensor, settings: Settings, seed: int) -> Dict[str, Any]:
    """Every method's ranking of the network's adaptable layers (the head excluded: it always trains)."""
    batches = [(images[i : i + 25], labels[i : i + 25]) for i in range(0, settings.analysis_images, 25)]

    def loss(output: Tensor, truth: Tensor) -> Tensor:
        return F.cross_entropy(output, truth)

    common = dict(layers=[nn.Linear, nn.Conv2d], exclude="classifier", progress=False, seed=seed)
    return {
        "mac": macattr.rank_layers(
            model, batches, "mac", target="label", patch_size=2, n_steps=settings.n_steps, **common
        ),  # fmt: skip
        "gradnorm": macattr.rank_layers(model, batches, "gradnorm", loss=loss, **common),
        "fisher": macattr.rank_layers(model, batches, "fisher", loss=loss, **common),
        "first": macattr.rank_layers(model, batches, "first", **common),
        "last": macattr.rank_layers(model, batches, "last", **common),
        "random": macattr.rank_layers(model, batches, "random", **common),
    }


def adapt(pretrained: nn.Module, names: List[str], data: Tuple[Tensor, ...], settings: Settings, seed: int,
          **lora_options: Any) -> Dict:  # fmt: skip
    """LoRA on ``names`` (or every parameter when ``names`` is None) plus the head; accuracy per test image.
    ``lora_options`` go to ``peft.LoraConfig`` (a ``rank_pattern``, say)."""
    import peft

    train_x, train_y, test_x, test_y = data
    model = copy.deepcopy(pretrained)
    torch.manual_seed(seed)  # LoRA's initialisation
    if names is None:
        model.requires_grad_(True)
        trainable, lr = sum(p.numel() for p in model.parameters()), settings.lr / 3
    else:
        config = lora_config(names, model, r=settings.rank, modules_to_save=["classifier"], **lora_options).config
        model = peft.get_peft_model(model, config)
        trainable, lr = model.get_nb_trainable_parameters()[0], settings.lr
    train(model, train_x, train_y, settings.finetune_epochs, lr, seed)
    return {"correct": correct(model, test_x, test_y), "trainable": int(trainable), "layers": names}


def run(out: Path, settings: Settings) -> Dict[str, Any]:
    """The whole experiment; writes OUT/digits.json and OUT/digits.md."""
    started = time.perf_counter()
    train_x, train_y, test_x, test_y = digits()
    pretrained = train(vision_transformer(), train_x, train_y, settings.pretrain_epochs, 1e-3, seed=0)
    source = float(correct(pretrained, test_x, test_y).mean())
    results: Dict[str, Any] = {"settings": asdict(settings), "source_accuracy": source, "tasks": {}}
    for task in TASKS:
        task_train_x, task_train_y = shift(task, train_x[: settings.train_images], train_y[: settings.train_images],
                                           1, settings.noise)  # fmt: skip
        task_test_x, task_test_y = shift(task, test_x, test_y, 2, settings.noise)
        data = (task_train_x, task_train_y, task_test_x, task_test_y)
        runs: Dict[str, List[Dict]] = {method: [] for method in (*METHODS, "full")}
        choices = {}
        for seed in range(settings.seeds):
            scores = rankings(pretrained, task_train_x, task_train_y, settings, seed)
            for method in METHODS:
                names = scores[method].top_k(settings.budget, budget="parameters")
                choices.setdefault(method, []).append(names)
                runs[method].append(adapt(pretrained, names, data, settings, seed))
            runs["full"].append(adapt(pretrained, None, data, settings, seed))
        before = float(correct(pretrained, task_test_x, task_test_y).mean())
        results["tasks"][task] = _summary(runs, before, choices)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "digits.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / "digits.md", markdown(results))
    return results


def _summary(runs: Dict[str, List[Dict]], before: float, choices: Dict[str, List[List[str]]]) -> Dict[str, Any]:
    """Per method: accuracy per seed, mean and std, and MAC's paired advantage per test image (seed means)."""
    per_image = {method: np.mean([r["correct"] for r in seeds], axis=0) for method, seeds in runs.items()}
    table: Dict[str, Any] = {"before": before, "test_images": len(per_image["mac"]), "methods": {}}
    for method, seeds in runs.items():
        accuracy = [float(r["correct"].mean()) for r in seeds]
        entry = {"accuracy": float(np.mean(accuracy)), "std": float(np.std(accuracy)), "per_seed": accuracy,
                 "trainable": int(np.mean([r["trainable"] for r in seeds])), "layers": choices.get(method)}  # fmt: skip
        if method != "mac":
            entry["mac_minus_this"] = paired_bootstrap(per_image["mac"], per_image[method])
        table["methods"][method] = entry
    return table


def markdown(results: Dict[str, Any]) -> str:
    """The tables of digits.json."""
    s = results["settings"]
    lines = [f"Source accuracy of the pre-trained ViT: {100 * results['source_accuracy']:.1f} %. LoRA rank "
             f"{s['rank']}, budget {100 * s['budget']:.0f} % of the network's parameters, {s['seeds']} seeds, "
             f"{s['train_images']} training images per task, {results['seconds']:.0f} s in all.", ""]  # fmt: skip
    for task, table in results["tasks"].items():
        lines += [f"### {task} (before adaptation: {100 * table['before']:.1f} %, {table['test_images']} test images)",
                  "", "| method | accuracy (%) | MAC − method (points, 95 % interval) | trainable parameters |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for method, entry in table["methods"].items():
            gap = entry.get("mac_minus_this")
            delta = "–" if gap is None else (f"{100 * gap['mean']:+.2f} [{100 * gap['low']:+.2f}, "
                                             f"{100 * gap['high']:+.2f}]")  # fmt: skip
            lines.append(f"| {method} | {100 * entry['accuracy']:.2f} ± {100 * entry['std']:.2f} | {delta} | "
                         f"{entry['trainable']:,} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


__all__ = ["METHODS", "TASKS", "Settings", "digits", "run", "shift", "vision_transformer"]
