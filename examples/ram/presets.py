"""Presets of the RAM example: network sizes, step counts, learning rates, analysis settings.

- ``tiny``: finishes ``all`` on a 2-core CPU in a few minutes (smaller network, more
  aggressive learning rates than the paper so that a few hundred steps learn something).
- ``small``: one GPU in about five minutes (SwinIR-light's size, bf16 autocast).
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

PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "networks": {
            "swinir": {"dim": 16, "depths": (2, 2), "heads": 2, "window": 4},
            "promptir": {"dim": 8, "blocks": (1, 1, 1), "heads": (1, 1, 2)},
        },
        "size": {"swinir": 32, "promptir": 32},
        "batch": 8,
        "pretrain": {"steps": 500, "lr": 2e-3, "lr_min": 2e-4, "mask_ratio": 0.5, "patch_size": 1},
        "finetune": {"steps": 300, "lr": 1e-3, "lr_min": 1e-7},
        "analyze": {"per_task": 2, "size": 32, "n_steps": 200, "mask_ratio": 0.5, "sharpness": 1e4},
        "evaluate": {"size": 48, "count": 4},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": ["noise15", "noise25", "noise50", "blur2", "jpeg50"],
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
        "finetune": {"steps": 800, "lr": 2e-4, "lr_min": 1e-7},
        "analyze": {"per_task": 10, "size": 64, "n_steps": 200, "mask_ratio": 0.5, "sharpness": 1e4},
        "evaluate": {"size": 128, "count": 8},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": ["noise15", "noise25", "noise50", "blur2", "jpeg50", "haze-synthetic", "lowlight-synthetic"],
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
        "finetune": {"steps": 100_000, "lr": 2e-4, "lr_min": 1e-7},
        "analyze": {"per_task": 10, "size": 64, "n_steps": 200, "mask_ratio": 0.5, "sharpness": 1e4},
        "evaluate": {"size": 256, "count": 100},
        "k": {"swinir": 0.1, "promptir": 0.3},
        "tasks": ["noise15", "noise25", "noise50", "blur2", "jpeg50", "haze", "rain", "lowlight", "motionblur"],
        "bf16": True,
    },
}


def preset(name: str) -> Dict[str, Any]:
    """A deep copy of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    return copy.deepcopy(PRESETS[name])
