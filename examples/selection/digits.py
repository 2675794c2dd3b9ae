"""The digits domain of the selection study: the ViT of [`examples.digits`][examples.digits.experiment] adapted with
LoRA (rank 4, the head always trained) to the shifted or the relabelled digits.

The task's training images are split: the first 80 % train (and are what the rankings read), the last 20 % are the
validation split on which each selection's learning rate is chosen; the test split is the held-out digits, shifted
the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from torch import nn

from examples.digits.experiment import Settings, adapt, digits, shift, train, vision_transformer
from macattr import LayerScores
from macattr.files import write_text_atomic
from macattr.peft import lora_config

from .harness import Plan, Runs, compared, rank_classifier, tuned


def pretrained(settings: Settings) -> nn.Module:
    """The ViT trained on the digits (seed 0)."""
    train_x, train_y, _, _ = digits()
    return train(vision_transformer(), train_x, train_y, settings.pretrain_epochs, 1e-3, seed=0)


class DigitsDomain:
    """One shifted task of the digits as a domain of the selection study (see the module text)."""

    metric, scale = "accuracy (%)", 100.0
    lrs = (3e-3, 1e-2, 3e-2)  # Adam on LoRA's and the head's parameters

    def __init__(self, task: str, model: nn.Module, settings: Settings) -> None:
        self.name, self.model, self.settings = f"digits_{task}", model, settings
        train_x, train_y, test_x, test_y = digits()
        count = settings.train_images
        x, y = shift(task, train_x[:count], train_y[:count], 1, settings.noise)
        cut = int(0.8 * count)
        self.train, self.validation = (x[:cut], y[:cut]), (x[cut:], y[cut:])
        self.test = shift(task, test_x, test_y, 2, settings.noise)

    def rank(self, method: str, seed: int) -> Tuple[LayerScores, int]:
        images = min(self.settings.analysis_images, len(self.train[1]))
        x, y = self.train[0][:images], self.train[1][:images]
        batches = [(x[i : i + 25], y[i : i + 25]) for i in range(0, images, 25)]
        common = dict(layers=[nn.Linear, nn.Conv2d], exclude="classifier", progress=False, seed=seed)
        return rank_classifier(self.model, batches, method, self.settings.n_steps, {"patch_size": 2}, **common)

    def fine_tune(self, plan: Plan, lr: float, seed: int, split: str) -> np.ndarray:
        evaluate = self.validation if split == "validation" else self.test
        data, settings = (*self.train, *evaluate), replace(self.settings, lr=lr)
        if plan is None or not isinstance(plan, Mapping):
            return adapt(self.model, None if plan is None else list(plan), data, settings, seed)["correct"]
        pattern = {f"^{re.escape(name)}$": rank for name, rank in plan.items()}  # LoRA's scale alpha / r stays 1
        return adapt(self.model, list(plan), data, settings, seed, rank_pattern=pattern,
                     alpha_pattern=pattern)["correct"]  # fmt: skip

    def trainable(self, plan: Plan) -> int:
        if plan is None:
            return sum(p.numel() for p in self.model.parameters())
        ranks = plan if isinstance(plan, Mapping) else dict.fromkeys(plan, self.settings.rank)
        lora = sum(rank * _fans(self.model.get_submodule(name)) for name, rank in ranks.items())
        return lora + sum(p.numel() for p in self.model.classifier.parameters())

    def adaptable(self) -> List[str]:
        """The layers LoRA adapts here (every Linear and Conv2d but the head), in registration order."""
        return [n for n, m in self.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                and not n.startswith("classifier")]  # fmt: skip


def _fans(layer: nn.Module) -> int:
    """Parameters of one LoRA rank on ``layer``: fan-in plus fan-out."""
    if isinstance(layer, nn.Linear):
        return layer.in_features + layer.out_features
    return layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] + layer.out_channels


def rank_allocation(domain: DigitsDomain, methods: Sequence[str], lrs: Sequence[float], seeds: int, top: int,
                    out: Path, log=print) -> Dict[str, Any]:  # fmt: skip
    """LoRA's ranks placed three ways at about one number of LoRA parameters: rank ``settings.rank`` on every
    adaptable layer; ranks shared by each method's scores (``lora_config(total_rank=...)``, the largest total
    rank whose adapters hold no more parameters than the uniform ones); and each method's top ``top`` layers
    at the largest common rank that holds no more. Each entry tuned and
    compared as in [`harness`][examples.selection.harness] (the uniform ranks and the baselines' entries are
    the baselines); writes OUT/allocation_<domain>.json."""
    runs = Runs.open(out / f"runs_{domain.name}.json")
    layers, rank = domain.adaptable(), domain.settings.rank
    uniform = dict.fromkeys(layers, rank)
    spend = _spent(domain, uniform)
    table = {"uniform ranks": {**tuned(domain, lrs, runs, [uniform] * seeds), "baseline": True}}
    for method in methods:
        scores, _ = domain.rank(method, 0)
        shared = next(plan for total in range(2 * rank * len(layers), len(layers) - 1, -1)
                      if _spent(domain, plan := lora_config(scores, domain.model, total_rank=total, r=rank).ranks)
                      <= spend)  # fmt: skip
        chosen = scores.top_k(top)
        capped = next(plan for top_rank in range(max(_largest_rank(domain.model.get_submodule(n)) for n in chosen),
                                                 0, -1)
                      if _spent(domain, plan := {n: min(top_rank, _largest_rank(domain.model.get_submodule(n)))
                                                 for n in chosen}) <= spend)  # fmt: skip
        baseline = method not in ("mac", "conductance", "internal_influence")
        for label, plan in ((f"ranks shared by {method}", shared), (f"top {top} of {method}", capped)):
            table[label] = {**tuned(domain, lrs, runs, [plan] * seeds), "baseline": baseline}
            log(f"{domain.name} {label:36s}: lr {table[label]['lr']:g}, test {100 * table[label]['mean']:.2f}, "
                f"{table[label]['trainable']:,} trainable")  # fmt: skip
    results = {"domain": domain.name, "rank": rank, "top": top, "seeds": seeds, "lrs": list(lrs),
               **compared(table, domain.scale)}  # fmt: skip
    write_text_atomic(out / f"allocation_{domain.name}.json", json.dumps(results, indent=1) + "\n")
    return results


def _spent(domain: DigitsDomain, ranks: Mapping[str, int]) -> int:
    """LoRA parameters of ``ranks`` (name → rank)."""
    return sum(rank * _fans(domain.model.get_submodule(name)) for name, rank in ranks.items())


def _largest_rank(layer: nn.Module) -> int:
    """The largest rank a LoRA adapter on ``layer`` can use: min(fan-out, fan-in)."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    return min(layer.out_channels, layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1])


def domains(settings: Settings) -> Tuple[DigitsDomain, ...]:
    """Both tasks, sharing one pre-trained network."""
    model = pretrained(settings)
    return DigitsDomain("shifted", model, settings), DigitsDomain("relabelled", model, settings)
