"""Presets of the RAM example: network sizes, step counts, learning rates, analysis and ablation settings.

- ``tiny``: finishes ``all`` on a 2-core CPU in a few minutes (a 35-layer network,
  larger learning rates than the paper so that a few hundred steps learn something).
- ``medium``: the evidence preset for a 2-core CPU: a SwinIR-style network with
  121 candidate layers (4 residual groups of 4 blocks), so that 10 % is a real
  choice. It fine-tunes for 4000 steps at a peak rate of 3e-3, the shortest
  budget measured at which the network fine-tuned on MAC's layers is above the
  degraded input on every task (blur needs it); ``ablate --seeds 3`` pre-trains
  once and fine-tunes every method three times, about 2.5 hours of one core
  (350–500 s per fine-tuning). Fine-tuning uses the L1 loss on whole images
  (``--finetune-loss relative_l1`` divides each sample's L1 by its input's:
  0.02–0.24 dB more on blur and JPEG, 1.2–5.6 dB less on noise, measured after
  400 and 2000 steps at 1e-3).
- ``small``: one GPU in a few minutes (SwinIR-light's size, bf16 autocast).
- ``paper``: the paper's settings as far as the paper states them (input 64 for
  SwinIR and 128 for PromptIR, 50 % pixel masks, Adam with cosine schedules
  1e-4 → 6e-5 for pre-training and 2e-4 → 1e-7 for fine-tuning, 10 images per
  degradation, N = 200, r = 0.5, δ = 1e4, top 10 % (SwinIR) / 30 % (PromptIR)).
  Its network sizes, batch sizes and iteration counts follow the public
  SwinIR/PromptIR configurations and are not verified against the RAM authors'
  runs; documented, not run here.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

SYNTHETIC = ["noise15", "noise25", "noise50", "blur2", "jpeg50"]
ANALYSIS = {"per_task": 10, "size": 32, "n_steps": 200, "mask_ratio": 0.5, "sharpness": 1e4}
ABLATION = ["mac", "ig", "conductance", "gradnorm", "last", "uniform", "random", "full", "none"]

PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "networks": {
            "swinir": {"dim": 16, "depths": (2, 2), "heads": 2, "window": 4},
            "promptir": {"dim": 8, "blocks": (1, 1, 1), "heads": (1, 1, 2)},
        },
        "size": {"swinir": 32, "promptir": 32},
        "batch": 8,
        "pretrain": {"steps": 500, "lr": 2e-3, "lr_min": 2e-4, "mask_ratio": 0.5, "patch_size": 1},
        "finetune": {"steps": 300, "lr": 1e-3, "lr_min": 1e-7, "loss": "l1"},
        "analyze": {**ANALYSIS, "per_task": 2},
        "evaluate": {"size": 48, "count": 100},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": SYNTHETIC,
        "ablation": ABLATION,
        "ratios": [0.25, 0.5, 0.75],
        "robustness": {"seeds": [1, 2], "per_task": [1], "n_steps": [25, 50]},
        "bf16": False,
    },
    "medium": {
        "networks": {
            "swinir": {"dim": 16, "depths": (4, 4, 4, 4), "heads": 2, "window": 4},
            "promptir": {"dim": 12, "blocks": (2, 2, 2), "heads": (1, 2, 2)},
        },
        "size": {"swinir": 32, "promptir": 32},
        "batch": 8,
        "pretrain": {"steps": 4000, "lr": 2e-3, "lr_min": 2e-4, "mask_ratio": 0.5, "patch_size": 1},
        "finetune": {"steps": 4000, "lr": 3e-3, "lr_min": 1e-6, "loss": "l1"},
        "analyze": ANALYSIS,
        "evaluate": {"size": 48, "count": 100},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": SYNTHETIC,
        "ablation": ABLATION,
        "ratios": [0.25, 0.5, 0.75],
        "robustness": {"seeds": [1, 2], "per_task": [2, 5], "n_steps": [50, 100]},
        "bf16": False,
    },
    "small": {
        "networks": {
            "swinir": {"dim": 60, "depths": (6, 6, 6, 6), "heads": 6, "window": 8},
            "promptir": {"dim": 24, "blocks": (2, 2, 3), "heads": (1, 2, 4)},
        },
        "size": {"swinir": 64, "promptir": 64},
        "batch": 16,
        "pretrain": {"steps": 2000, "lr": 5e-4, "lr_min": 5e-5, "mask_ratio": 0.5, "patch_size": 1},
        "finetune": {"steps": 800, "lr": 2e-4, "lr_min": 1e-7, "loss": "l1"},
        "analyze": {**ANALYSIS, "size": 64},
        "evaluate": {"size": 128, "count": 100},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": SYNTHETIC + ["haze-synthetic", "lowlight-synthetic"],
        "ablation": ABLATION,
        "ratios": [0.25, 0.5, 0.75],
        "robustness": {"seeds": [1, 2], "per_task": [2, 5], "n_steps": [50, 100]},
        "bf16": True,
    },
    "paper": {
        "networks": {
            "swinir": {"dim": 180, "depths": (6, 6, 6, 6, 6, 6), "heads": 6, "window": 8},
            "promptir": {"dim": 48, "blocks": (4, 6, 6), "heads": (1, 2, 4)},
        },
        "size": {"swinir": 64, "promptir": 128},
        "batch": 32,
        "pretrain": {"steps": 200_000, "lr": 1e-4, "lr_min": 6e-5, "mask_ratio": 0.5, "patch_size": 1},
        "finetune": {"steps": 100_000, "lr": 2e-4, "lr_min": 1e-7, "loss": "l1"},
        "analyze": {**ANALYSIS, "size": 64},
        "evaluate": {"size": 256, "count": 100},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": SYNTHETIC + ["haze", "rain", "lowlight", "motionblur"],
        "ablation": ABLATION,
        "ratios": [0.25, 0.5, 0.75],
        "robustness": {"seeds": [1, 2], "per_task": [2, 5], "n_steps": [50, 100]},
        "bf16": True,
    },
}


def preset(name: str, steps_scale: float = 1.0) -> Dict[str, Any]:
    """A deep copy of preset ``name``, with every step count multiplied by ``steps_scale`` (at least 1 step)."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    settings = copy.deepcopy(PRESETS[name])
    for stage in ("pretrain", "finetune"):
        settings[stage]["steps"] = max(1, round(settings[stage]["steps"] * steps_scale))
    return settings


def set_finetune_lr(settings: Dict[str, Any], lr: float, option: str) -> None:
    """Set the peak fine-tuning rate of ``settings`` to ``lr``; the cosine schedule still ends at its final rate.

    Raises ValueError naming ``option`` when ``lr`` is not above that final rate (nan included).
    """
    final = settings["finetune"]["lr_min"]
    if not lr > final:
        raise ValueError(f"{option} must be above the preset's final learning rate {final:g}, got {lr:g}")
    settings["finetune"]["lr"] = lr
