"""The restoration domain of the selection study: the RAM example's mask-pre-trained SwinIR-style network
([`examples.ram`][examples.ram.pipeline]) fine-tuned on whole degraded images, layers chosen by each method.

It runs the ``tiny`` preset (a 35-layer network, 500 pre-training and 300 fine-tuning steps on a 2-core CPU)
rather than ``medium`` (121 layers, 4000 fine-tuning steps, 350–500 s each): the protocol's hundred-odd
fine-tunings fit in about an hour. What that changes: the network is smaller and less trained, so its PSNR is
lower and the ranking chooses among fewer layers. The rankings read the preset's analysis images (crops of the
training photographs); the validation split is as many tiles of the training photographs as the test split has,
spread evenly over them, with fresh degradations (distinct from the test tiles, which come from the test
photographs and are never used to choose).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from examples.ram.pipeline import EVAL_PIXELS, Run, finetune, load_model, pretrain, rank, test_sets
from examples.ram.presets import preset
from macattr import LayerScores
from macattr.finetune import parameter_counts
from macattr.layers import candidate_layers
from macattr.ranking.methods import get_method
from macattr.restoration.data import evaluation_sets
from macattr.restoration.evaluate import per_image_quality, restore
from macattr.restoration.images import photographs
from macattr.seeds import derive_seed


class RestorationDomain:
    """RAM's restoration network as a domain of the selection study (see the module text)."""

    metric, scale = "PSNR (dB)", 1.0
    lrs = (3e-4, 1e-3, 3e-3)

    def __init__(self, out: Path, preset_name: str = "tiny") -> None:
        self.name = f"ram_{preset_name}"
        self.run = Run(out / self.name, "swinir", preset(preset_name), torch.device("cpu"), progress=False)
        self.weights = pretrain(self.run)
        cfg = self.run.preset.evaluate
        self.test = test_sets(self.run)
        self.validation, _ = evaluation_sets(self.run.preset.tasks, photographs("train"), None, cfg.size,
                                             cfg.count, derive_seed(self.run.seed, "validation"))  # fmt: skip
        count = len(next(iter(self.test.values()))["lq"])  # as many validation tiles as test tiles, spread evenly
        spread = {task: torch.linspace(0, len(data["lq"]) - 1, count).long() for task, data in self.validation.items()}
        self.validation = {task: {key: images[spread[task]] for key, images in data.items()}
                           for task, data in self.validation.items()}  # fmt: skip

    def rank(self, method: str, seed: int) -> Tuple[LayerScores, int]:
        path = self.run.out / "rankings" / f"{method}_seed{seed}.json"
        scores = rank(self.run, self.weights, method, path, seed=seed)
        record = get_method(method)
        passes = 0 if not record.needs_loader else scores.images * (self.run.preset.analyze.n_steps
                                                                     if record.uses_path else 1)  # fmt: skip
        return scores, passes

    def fine_tune(self, names: Optional[Sequence[str]], lr: float, seed: int, split: str) -> np.ndarray:
        layers = list(candidate_layers(load_model(self.run, self.weights))) if names is None else list(names)
        run = replace(self.run, preset=self.run.preset.with_finetune_lr(lr))
        key = hashlib.sha256(json.dumps([layers, lr, seed]).encode()).hexdigest()[:16]
        network = finetune(run, layers, self.run.out / "finetunes" / key, seed)
        model = load_model(self.run, network)
        sets = self.validation if split == "validation" else self.test
        psnr = []
        for data in sets.values():
            pixels = data["lq"].shape[-1] * data["lq"].shape[-2]
            output = restore(model, data["lq"], torch.device("cpu"), batch=max(1, EVAL_PIXELS // pixels))
            psnr += per_image_quality(output, data["gt"])["psnr"]
        return np.asarray(psnr)

    def trainable(self, names: Optional[Sequence[str]]) -> int:
        model = load_model(self.run, self.weights)
        if names is None:
            return sum(p.numel() for p in model.parameters())
        sizes, _ = parameter_counts(model, list(names))
        return sum(sizes.values())
