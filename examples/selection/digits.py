"""The digits domain of the selection study: the ViT of [`examples.digits`][examples.digits.experiment] adapted with
LoRA (rank 4, the head always trained) to the shifted or the relabelled digits.

The task's training images are split: the first 80 % train (and are what the rankings read), the last 20 % are the
validation split on which each selection's learning rate is chosen; the test split is the held-out digits, shifted
the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence, Tuple

import numpy as np
import torch.nn.functional as F
from torch import nn

import macattr
from examples.digits.experiment import Settings, adapt, digits, shift, train, vision_transformer
from macattr import LayerScores
from macattr.ranking.methods import get_method


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
        record = get_method(method)
        if record.uses_path:
            options = dict(target="label", n_steps=self.settings.n_steps)
            if record.step_rule:
                options["rule"] = "trapezoid"
            if method == "mac":
                options["patch_size"] = 2
            scores = macattr.rank_layers(self.model, batches, method, **common, **options)
            return scores, images * self.settings.n_steps
        if record.needs_ground_truth:
            scores = macattr.rank_layers(self.model, batches, method, loss=F.cross_entropy, **common)
            return scores, images
        return macattr.rank_layers(self.model, batches, method, **common), 0

    def fine_tune(self, names: Optional[Sequence[str]], lr: float, seed: int, split: str) -> np.ndarray:
        evaluate = self.validation if split == "validation" else self.test
        data = (*self.train, *evaluate)
        chosen = None if names is None else list(names)
        return adapt(self.model, chosen, data, replace(self.settings, lr=lr), seed)["correct"]

    def trainable(self, names: Optional[Sequence[str]]) -> int:
        if names is None:
            return sum(p.numel() for p in self.model.parameters())
        rank = self.settings.rank
        lora = sum(rank * (m.in_features + m.out_features) if isinstance(m, nn.Linear)
                   else rank * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels)
                   for m in (self.model.get_submodule(n) for n in names))  # fmt: skip
        return lora + sum(p.numel() for p in self.model.classifier.parameters())


def domains(settings: Settings) -> Tuple[DigitsDomain, ...]:
    """Both tasks, sharing one pre-trained network."""
    model = pretrained(settings)
    return DigitsDomain("shifted", model, settings), DigitsDomain("relabelled", model, settings)
