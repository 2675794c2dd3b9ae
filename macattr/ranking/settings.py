"""``RankSettings``: everything that decides a ranking's numbers, validated once, written into every scores file."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from macattr._checks import check_choice, check_int
from macattr.paths import MaskAttributionPath
from macattr.targets import NAMED_TARGETS

ATTRIBUTION_METHODS = ("mac", "ig", "conductance")
STRUCTURAL_METHODS = ("random", "uniform", "last")
METHODS = ATTRIBUTION_METHODS + ("gradnorm",) + STRUCTURAL_METHODS

TargetSpec = Union[str, int, Tuple[int, ...], Callable[[Tensor], Tensor]]


@dataclass(frozen=True)
class RankSettings:
    """The settings of [`rank_layers()`][macattr.ranking.rank_layers] that decide the scores.

    Args:
        method: "mac" (conductance along the mask attribute path), "ig"
            (internal influence along the linear path), "conductance" (linear
            path), "gradnorm" (relative gradient norm of each layer's own
            parameters under the fine-tuning loss, on (input, ground truth)
            pairs), "random" (seeded), "uniform" (spread evenly through depth)
            or "last" (the deepest layers first).
        target: a name in ``macattr.targets.NAMED_TARGETS`` ("gradient_magnitude",
            the LAM/RAM target and the default; "sum"; "mean"), a Captum class
            index or index tuple for classifiers, or a callable reducing the
            model output (N, ...) to (N,).
        n_steps: grid intervals N of the path (≥ 1).
        mask_ratio: the mask attribute path's r (see [`MaskAttributionPath`][macattr.paths.MaskAttributionPath]).
        sharpness: the mask attribute path's δ.
        patch_size: positions per masked cell along each masked dimension.
        mask_dims: what the mask path masks cell by cell: "image" (pixels of
            (N, C, H, W)), "sequence" (tokens of (N, T, D) embeddings), "volume"
            (voxels of (N, C, D, H, W)) or a tuple of dimensions.
        baselines: the baseline ``x'``: a number or a tensor broadcastable to each batch.
        seed: image ``i`` (counted over the analysed images) gets the pixel
            thresholds of seed ``(seed, i)``: scores do not depend on batching.
        samples_per_group: analyse only the first this many images of each group
            (RAM: 10 per degradation).
        max_images: stop after this many analysed images.
        internal_batch_size: rows per forward pass (see ``LayerPathConductance.attribute``).
        train_mode: run the model in train mode (BatchNorm statistics of the
            batch, dropout on); the default runs it in eval mode. Either way the
            model's modes and buffers are restored afterwards.

    Examples:
        >>> settings = RankSettings(n_steps=50, seed=3)
        >>> settings.to_config()["n_steps"], settings.to_config()["sharpness"]
        (50, 10000.0)
        >>> RankSettings(method="shap")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: method must be one of ['mac', 'ig', ..., 'last'], got 'shap'
    """

    method: str = "mac"
    target: TargetSpec = "gradient_magnitude"
    n_steps: int = 200
    mask_ratio: float = 0.5
    sharpness: float = 1e4
    patch_size: Union[int, Tuple[int, ...]] = 1
    mask_dims: Union[str, Tuple[int, ...]] = "image"
    baselines: Union[float, Tensor] = 0.0
    seed: int = 0
    samples_per_group: Optional[int] = None
    max_images: Optional[int] = None
    internal_batch_size: Optional[int] = None
    train_mode: bool = False

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_int("n_steps", self.n_steps, 1)
        check_int("seed", self.seed, 0)
        self.mask_path()  # checks mask_ratio, sharpness and patch_size once, where they are used
        for name in ("samples_per_group", "max_images", "internal_batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if isinstance(self.target, str):
            check_choice("target", self.target, sorted(NAMED_TARGETS))
        elif isinstance(self.target, tuple) and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.target
        ):
            raise TypeError(f"a tuple target must hold indices >= 0, got {self.target!r}")
        elif not isinstance(self.target, (int, tuple)) and not callable(self.target) or isinstance(self.target, bool):
            raise TypeError(
                f"target must be a name, a class index, a tuple or a callable, got {type(self.target).__name__}"
            )
        if not isinstance(self.baselines, (int, float, Tensor)) or isinstance(self.baselines, bool):
            raise TypeError(f"baselines must be a number or a tensor, got {type(self.baselines).__name__}")
        if not isinstance(self.train_mode, bool):
            raise TypeError(f"train_mode must be True or False, got {self.train_mode!r}")

    @classmethod
    def from_options(cls, method: str, settings: Optional[RankSettings], options: Mapping[str, Any]) -> RankSettings:
        """``settings`` (or the defaults) with ``method`` and ``options`` (field name → value) applied."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"rank_layers got unknown options {unknown}; settings are {sorted(known - {'method'})}")
        if settings is not None and not isinstance(settings, RankSettings):
            raise TypeError(f"settings must be RankSettings or None, got {type(settings).__name__}")
        base = asdict(settings) if settings is not None else {}
        return cls(**{**base, "method": method, **options})

    def mask_path(self, seeds: Optional[List[int]] = None) -> MaskAttributionPath:
        """The mask attribute path of these settings, with one threshold seed per image when given."""
        return MaskAttributionPath(self.mask_ratio, self.sharpness, self.patch_size, seed=seeds,
                                   mask_dims=self.mask_dims)  # fmt: skip

    @property
    def target_name(self) -> Union[str, int, list]:
        """The target as written into files: its name, index, index list, or the callable's name."""
        if isinstance(self.target, (str, int)):
            return self.target
        if isinstance(self.target, tuple):
            return list(self.target)
        return getattr(self.target, "__name__", "custom")

    def to_config(self) -> Dict[str, Any]:
        """The JSON record of the settings that decide the scores (what a checkpoint must match to resume)."""
        left_out = ("method", "internal_batch_size")  # the method is recorded beside; batching does not change scores
        config = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in left_out}
        config["target"] = self.target_name
        config["mask_dims"] = self.mask_dims if isinstance(self.mask_dims, str) else list(self.mask_dims)
        config["patch_size"] = self.patch_size if isinstance(self.patch_size, int) else list(self.patch_size)
        config["sharpness"] = "inf" if math.isinf(self.sharpness) else float(self.sharpness)
        base = self.baselines
        config["baselines"] = float(base) if not isinstance(base, Tensor) else _tensor_label(base)
        return config


def _tensor_label(tensor: Tensor) -> str:
    """A tensor baseline as a checkpoint records it: its shape and a fingerprint of its values."""
    data = tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return f"tensor{tuple(tensor.shape)} sha256:{hashlib.sha256(data).hexdigest()[:16]}"
