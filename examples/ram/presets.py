"""Presets of the RAM example: network sizes, step counts, learning rates, analysis and ablation settings.

Every preset is a frozen record; a variant is made with ``dataclasses.replace`` (or the helpers below), never by
changing a preset in place.

- ``test``: the test suite's size: the ``tiny`` networks with a few dozen steps and small test tiles, so that the
  whole pipeline and its studies run in seconds (its numbers say only that the pipeline works).
- ``tiny``: finishes ``all`` on a 2-core CPU in a few minutes (a 35-layer network,
  larger learning rates than the paper so that a few hundred steps learn something).
- ``medium``: the evidence preset for a 2-core CPU: a SwinIR-style network with
  121 candidate layers (4 residual groups of 4 blocks), so that 10 % is a real
  choice. It fine-tunes for 4000 steps at a peak rate of 3e-3, the shortest
  budget measured at which the network fine-tuned on MAC's layers is above the
  degraded input on every task (blur needs it); ``ablate --seeds 3`` pre-trains
  once and fine-tunes every method three times, about 2.5 hours of one core
  (350–500 s per fine-tuning). Fine-tuning uses the L1 loss on whole images
  (``--finetune-loss relative_l1`` divides each sample's L1 by its input's).
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

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from macattr.ranking.methods import names as method_names

SYNTHETIC = ("noise15", "noise25", "noise50", "blur2", "jpeg50")
ABLATION = (*method_names(), "full", "none")  # every ranking method, every layer, no fine-tuning


@dataclass(frozen=True)
class Pretraining:
    """Mask pre-training: Adam with a cosine schedule from ``lr`` to ``lr_min`` over ``steps`` steps, a fraction
    ``mask_ratio`` of the pixels masked in cells of ``patch_size``."""

    steps: int
    lr: float
    lr_min: float
    mask_ratio: float = 0.5
    patch_size: int = 1


@dataclass(frozen=True)
class FineTuning:
    """Fine-tuning of the chosen layers on whole images: Adam, cosine from ``lr`` to ``lr_min``, loss ``loss``."""

    steps: int
    lr: float
    lr_min: float
    loss: str = "l1"


@dataclass(frozen=True)
class Analysis:
    """The MAC analysis: ``per_task`` crops of ``size`` pixels per task, N = ``n_steps``, r, δ."""

    per_task: int = 10
    size: int = 32
    n_steps: int = 200
    mask_ratio: float = 0.5
    sharpness: float = 1e4


@dataclass(frozen=True)
class Evaluation:
    """Test tiles of ``size`` pixels: every textured tile of the test photographs (or the first ``tiles`` of
    them), and up to ``count`` images of a paired data set."""

    size: int = 48
    count: int = 100
    tiles: Optional[int] = None


@dataclass(frozen=True)
class Robustness:
    """The variations of the MAC ranking that ``robustness`` compares with the analysis."""

    seeds: Tuple[int, ...] = (1, 2)
    per_task: Tuple[int, ...] = (2, 5)
    n_steps: Tuple[int, ...] = (50, 100)


@dataclass(frozen=True)
class Architecture:
    """One network of a preset: its constructor's arguments, its training crop size and its share ``k`` of
    layers to fine-tune."""

    network: Mapping[str, Any]
    size: int
    k: float


@dataclass(frozen=True)
class Preset:
    """Everything a pipeline run is made with, apart from its device, seeds and folders."""

    name: str
    architectures: Mapping[str, Architecture]
    batch: int
    pretrain: Pretraining
    finetune: FineTuning
    analyze: Analysis = field(default_factory=Analysis)
    evaluate: Evaluation = field(default_factory=Evaluation)
    tasks: Tuple[str, ...] = SYNTHETIC
    ablation: Tuple[str, ...] = ABLATION
    ratios: Tuple[float, ...] = (0.25, 0.5, 0.75)
    robustness: Robustness = field(default_factory=Robustness)
    bf16: bool = False
    budget: str = "layers"  # what k counts in the ablation: layers (RAM) or the model's trainable parameters

    def scaled(self, steps_scale: float) -> Preset:
        """Every step count multiplied by ``steps_scale`` (at least 1 step)."""
        if not steps_scale > 0:
            raise ValueError(f"--steps-scale must be > 0, got {steps_scale}")

        def scale(stage: Any) -> Any:
            return replace(stage, steps=max(1, round(stage.steps * steps_scale)))

        return replace(self, pretrain=scale(self.pretrain), finetune=scale(self.finetune))

    def with_k(self, arch: str, k: float) -> Preset:
        """The share of layers ``arch`` fine-tunes set to ``k``."""
        architectures = {**self.architectures, arch: replace(self.architectures[arch], k=k)}
        return replace(self, architectures=architectures)

    def with_finetune_lr(self, lr: float, option: str = "--finetune-lr") -> Preset:
        """The peak fine-tuning rate set to ``lr``; the cosine schedule still ends at the final rate. Raises
        ValueError naming ``option`` when ``lr`` is not above that final rate (nan included)."""
        if not lr > self.finetune.lr_min:
            raise ValueError(f"{option} must be above the preset's final learning rate {self.finetune.lr_min:g}, "
                             f"got {lr:g}")  # fmt: skip
        return replace(self, finetune=replace(self.finetune, lr=lr))


def _swinir(dim: int, depths: Tuple[int, ...], heads: int, window: int) -> Dict[str, Any]:
    return {"dim": dim, "depths": depths, "heads": heads, "window": window}


def _promptir(dim: int, blocks: Tuple[int, ...], heads: Tuple[int, ...]) -> Dict[str, Any]:
    return {"dim": dim, "blocks": blocks, "heads": heads}


_TINY = {
    "swinir": Architecture(_swinir(16, (2, 2), 2, 4), 32, 0.1),
    "promptir": Architecture(_promptir(8, (1, 1, 1), (1, 1, 2)), 32, 0.3),
}
PRESETS: Dict[str, Preset] = {
    "test": Preset(
        "test",
        _TINY,
        batch=4,
        pretrain=Pretraining(150, 2e-3, 2e-4),
        finetune=FineTuning(200, 2e-3, 1e-7),
        analyze=Analysis(per_task=2, size=16, n_steps=6),
        evaluate=Evaluation(size=32, count=8, tiles=64),
        tasks=("noise25", "jpeg50"),
        ratios=(0.25, 0.5),
        robustness=Robustness(seeds=(1,), per_task=(1,), n_steps=(3,)),
    ),  # fmt: skip
    "tiny": Preset(
        "tiny",
        _TINY,
        batch=8,
        pretrain=Pretraining(500, 2e-3, 2e-4),
        finetune=FineTuning(300, 1e-3, 1e-7),
        analyze=Analysis(per_task=2),
        robustness=Robustness(seeds=(1, 2), per_task=(1,), n_steps=(25, 50)),
    ),  # fmt: skip
    "medium": Preset(
        "medium",
        {
            "swinir": Architecture(_swinir(16, (4, 4, 4, 4), 2, 4), 32, 0.1),
            "promptir": Architecture(_promptir(12, (2, 2, 2), (1, 2, 2)), 32, 0.3),
        },
        batch=8,
        pretrain=Pretraining(4000, 2e-3, 2e-4),
        finetune=FineTuning(4000, 3e-3, 1e-6),
    ),  # fmt: skip
    "small": Preset(
        "small",
        {
            "swinir": Architecture(_swinir(60, (6, 6, 6, 6), 6, 8), 64, 0.1),
            "promptir": Architecture(_promptir(24, (2, 2, 3), (1, 2, 4)), 64, 0.3),
        },
        batch=16,
        pretrain=Pretraining(2000, 5e-4, 5e-5),
        finetune=FineTuning(800, 2e-4, 1e-7),
        analyze=Analysis(size=64),
        evaluate=Evaluation(size=128),
        tasks=(*SYNTHETIC, "haze-synthetic", "lowlight-synthetic"),
        bf16=True,
    ),  # fmt: skip
    "paper": Preset(
        "paper",
        {
            "swinir": Architecture(_swinir(180, (6,) * 6, 6, 8), 64, 0.1),
            "promptir": Architecture(_promptir(48, (4, 6, 6), (1, 2, 4)), 128, 0.3),
        },
        batch=32,
        pretrain=Pretraining(200_000, 1e-4, 6e-5),
        finetune=FineTuning(100_000, 2e-4, 1e-7),
        analyze=Analysis(size=64),
        evaluate=Evaluation(size=256),
        tasks=(*SYNTHETIC, "haze", "rain", "lowlight", "motionblur"),
        bf16=True,
    ),  # fmt: skip
}


def preset(name: str, steps_scale: Optional[float] = None) -> Preset:
    """Preset ``name``, with every step count multiplied by ``steps_scale`` when given."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name] if steps_scale is None else PRESETS[name].scaled(steps_scale)
