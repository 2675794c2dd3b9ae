"""``RankSettings``: everything that decides a ranking's numbers, validated once, written into every scores file."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor

from macattr._checks import check_choice, check_int
from macattr.paths import IntegrationPath, MaskAttributionPath, describe_path, interval_of
from macattr.ranking.methods import Method, get_method, methods
from macattr.records import json_value
from macattr.scores import check_k
from macattr.targets import NAMED_TARGETS, OutputSpec
from macattr.vocabulary import NORMALIZATIONS, RULES

TargetSpec = Union[str, int, Tuple[int, ...], Callable[[Tensor], Tensor]]
_MASK_OPTIONS = ("mask_ratio", "sharpness", "patch_size", "mask_dims", "ramp")


@dataclass(frozen=True)
class UntilStable:
    """When a ranking has seen enough images: the bootstrap probability that its top k stays the same.

    The ranking reads the loader in passes. Pass 1 analyses the first ``min_per_group`` images of every group
    (of the whole loader without groups); each further pass raises that count by a quarter (at least one),
    reading the loader again and analysing only the images it adds. After each pass the per-image scores are
    resampled within their groups ([`LayerScores.confidence()`][macattr.scores.LayerScores.confidence] with
    ``resamples``); the ranking stops once the share of resamples whose top ``k`` (by ``budget``) is the
    current one reaches ``threshold``, or when the loader, ``samples_per_group`` or ``max_images`` has no more
    images to give. The scores' config records how it stopped (``"stopped"``: passes, images, the last
    probability, whether it reached the threshold). Without groups, a ranking that stops after n images equals
    ``max_images=n``; with groups it analyses the images of ``samples_per_group=q`` but numbers them, and so seeds
    their mask paths, in the order the passes reach them. The loader must give the same images in the same order on
    every pass (it is checked); the ranking runs in one process and without a checkpoint.

    Args:
        threshold: the probability to reach, in (0, 1) (0.95: the top k of 95 % of resamples is the same).
        k: the selection that has to be stable: a fraction of the candidates or a count, as in
            ``LayerScores.top_k``.
        budget: what ``k`` counts, ``"layers"`` or ``"parameters"``, as in ``LayerScores.top_k``.
        min_per_group: images of every group before the first check, >= 2 (the bootstrap needs two).
        resamples: bootstrap resamples per check, >= 2.

    Examples:
        >>> UntilStable(0.9).to_config()
        {'threshold': 0.9, 'k': 0.1, 'budget': 'layers', 'min_per_group': 3, 'resamples': 200}
    """

    threshold: float = 0.95
    k: Union[int, float] = 0.1
    budget: str = "layers"
    min_per_group: int = 3
    resamples: int = 200

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"until_stable's threshold must be a probability in (0, 1), got {self.threshold!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"until_stable's threshold must be a probability in (0, 1), got {self.threshold!r}")
        check_k(self.k)
        check_choice("budget", self.budget, ["layers", "parameters"])
        check_int("min_per_group", self.min_per_group, 2)
        check_int("resamples", self.resamples, 2)

    def next_quota(self, quota: int) -> int:
        """Images per group after the round that follows one ending at ``quota``.

        Examples:
            >>> [UntilStable().next_quota(quota) for quota in (3, 4, 5, 8)]  # images per group after each pass
            [4, 5, 7, 10]
        """
        return max(quota + 1, math.ceil(1.25 * quota))

    def to_config(self) -> Dict[str, Any]:
        return {"threshold": float(self.threshold), "k": self.k, "budget": self.budget,
                "min_per_group": self.min_per_group, "resamples": self.resamples}  # fmt: skip


@dataclass(frozen=True)
class RankSettings:
    """The settings of [`rank_layers()`][macattr.ranking.rank_layers] that decide the scores.

    Args:
        method: the name or alias of a registered method ([`macattr.ranking.methods`][macattr.ranking.methods]):
            "mac" (conductance along the mask attribute path, the default), "conductance" (along ``path``),
            "internal_influence" (alias "ig", RAM's IG baseline), the loss-based "gradnorm" and "fisher", the
            orders "random", "uniform", "last", "first", and any method registered since
            (``macattr.ranking.methods.names()``). An alias is stored as the method's name.
        target: a name in ``macattr.targets.NAMED_TARGETS`` ("gradient_magnitude",
            the LAM/RAM target and the default; "sum"; "mean"), a Captum class
            index or index tuple for classifiers, ``"label"`` (each sample's own
            target, from (input, label) batches: class indices (N,), or index rows
            (N, k) into each sample's output, such as a causal LM's (position,
            next token) per sequence), or a callable reducing the model output
            (N, ...) to (N,).
        output: what to attribute of a model that returns several tensors (a Hugging Face ``ModelOutput``, a
            dict, a tuple): a key, an index or a function of the output; ``None`` takes a tensor output as it
            is and otherwise its ``logits`` (see ``macattr.targets.pick_output``).
        normalize: normalise each batch's input per channel before the path, ``(x − mean) / std``: ``"imagenet"``
            (ImageNet's mean and standard deviation, as the RAM authors' analysis does) or ``(mean, std)``, one
            value per channel each. The baseline stays 0 in the normalised space (the mean colour); the ground
            truth of ``gradnorm``/``fisher`` is not changed.
        input_name: pass each batch's input to the model by this keyword (``"inputs_embeds"`` to attribute a
            Hugging Face text model along its embeddings, ``"pixel_values"``); ``None``: positionally.
        n_steps: grid intervals N of the path (≥ 1); with a segment rule, the segments.
        rule: the step rule of conductance ("mac", "conductance"): "left" (the paper's Eq. 9, the default),
            "right" (the RAM authors' code) or "trapezoid"; or a segment rule, "gauss2", "gauss3", "gauss4"
            (m Gauss–Legendre nodes inside each of N straight segments: N (m + 1) + 1 passes per image) and
            their "-graded" forms (see [`macattr.segments`][macattr.segments]).
        path: the [`IntegrationPath`][macattr.paths.IntegrationPath] of a method that integrates along one
            (``None``: the method's own, the mask attribute path built from the four mask options for "mac",
            the linear path for the others). A path with ``for_images(seeds)`` (the mask path) gets one
            threshold seed per analysed image.
        mask_ratio: the mask attribute path's r (see [`MaskAttributionPath`][macattr.paths.MaskAttributionPath]).
        sharpness: the mask attribute path's δ.
        patch_size: positions per masked cell along each masked dimension.
        mask_dims: what the mask path masks cell by cell: "image" (pixels of
            (N, C, H, W)), "sequence" (tokens of (N, T, D) embeddings), "volume"
            (voxels of (N, C, D, H, W)) or a tuple of dimensions.
        ramp: reveal each masked cell linearly, one after another (the mask path's ``ramp``): step sums then
            converge at their rule's order once the grid has several steps per masked cell (token sequences,
            patches); the sigmoid's jumps keep them at a fixed error. The five mask options build the default
            path of "mac" and are refused with ``path=`` or with a method that does not use the mask path.
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
        k_rounding: how the scores' ``top_k`` rounds a fraction of the layers: "up" (at least one, the default)
            or "down" (the RAM authors' code: 26 of 263 layers at k = 0.1); recorded in the scores.
        until_stable: stop adding images once the top k is known: an
            [`UntilStable`][macattr.ranking.settings.UntilStable] rule, or its threshold (``0.95``: stop when
            95 % of bootstrap resamples have the same top 10 %). ``None`` (the default) analyses every image the
            loader and the limits give.

    Examples:
        >>> settings = RankSettings(n_steps=50, seed=3)
        >>> settings.to_config()["n_steps"], settings.to_config()["path"]["sharpness"]
        (50, 10000.0)
        >>> RankSettings(method="ig").method
        'internal_influence'
        >>> RankSettings(method="shap")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: method must be one of ['mac', 'conductance', ..., 'ig'], got 'shap'
    """

    method: str = "mac"
    target: TargetSpec = "gradient_magnitude"
    output: OutputSpec = None
    normalize: Union[None, str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    input_name: Optional[str] = None
    n_steps: int = 200
    rule: str = "left"
    path: Optional[IntegrationPath] = None
    mask_ratio: float = 0.5
    sharpness: float = 1e4
    patch_size: Union[int, Tuple[int, ...]] = 1
    mask_dims: Union[str, Tuple[int, ...]] = "image"
    ramp: bool = False
    baselines: Union[float, Tensor] = 0.0
    seed: int = 0
    samples_per_group: Optional[int] = None
    max_images: Optional[int] = None
    internal_batch_size: Optional[int] = None
    train_mode: bool = False
    k_rounding: str = "up"
    until_stable: Union[None, float, UntilStable] = None

    def __post_init__(self) -> None:
        if self.until_stable is not None and not isinstance(self.until_stable, UntilStable):
            object.__setattr__(self, "until_stable", UntilStable(self.until_stable))
        object.__setattr__(self, "method", get_method(self.method).name)  # an alias is stored as the name
        check_int("n_steps", self.n_steps, 1)
        check_choice("rule", self.rule, RULES)
        if self.rule != "left" and not self.method_record.step_rule:
            raise ValueError(f"method={self.method!r} sums no conductance steps, so it takes no rule= "
                             f"(got {self.rule!r}); the methods with step rules are "
                             f"{[m.name for m in methods() if m.step_rule]}")  # fmt: skip
        check_int("seed", self.seed, 0)
        self.mask_path()  # checks the mask options once, where they are used
        self._check_path()
        for name in ("samples_per_group", "max_images", "internal_batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if isinstance(self.target, str):
            check_choice("target", self.target, [*sorted(NAMED_TARGETS), "label"])
            if self.target == "label" and not self.method_record.uses_path:
                raise ValueError(f"target='label' picks each image's class logit for an attribution method; "
                                 f"method={self.method!r} takes no target")  # fmt: skip
        elif isinstance(self.target, tuple) and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.target
        ):
            raise TypeError(f"a tuple target must hold indices >= 0, got {self.target!r}")
        elif not isinstance(self.target, (int, tuple)) and not callable(self.target) or isinstance(self.target, bool):
            raise TypeError(
                f"target must be a name, a class index, a tuple or a callable, got {type(self.target).__name__}"
            )
        if self.output is not None and not (isinstance(self.output, (str, int)) or callable(self.output)):
            raise TypeError(f"output must be None, a key, an index or a function, got {type(self.output).__name__}")
        if isinstance(self.output, bool):
            raise TypeError("output must be None, a key, an index or a function, got a bool")
        self.normalization()  # checks normalize
        if self.input_name is not None and (not isinstance(self.input_name, str) or not self.input_name.isidentifier()):
            raise ValueError(f"input_name must be a keyword of the model's forward, got {self.input_name!r}")
        if not isinstance(self.baselines, (int, float, Tensor)) or isinstance(self.baselines, bool):
            raise TypeError(f"baselines must be a number or a tensor, got {type(self.baselines).__name__}")
        if not isinstance(self.train_mode, bool):
            raise TypeError(f"train_mode must be True or False, got {self.train_mode!r}")
        check_choice("k_rounding", self.k_rounding, ["up", "down"])

    def _check_path(self) -> None:
        """The path and the mask options fit the method: one way to give the path, a path type it takes."""
        record = self.method_record
        changed = [name for name in _MASK_OPTIONS if getattr(self, name) != _DEFAULTS[name]]
        if self.path is not None:
            if not record.uses_path:
                raise ValueError(f"method={self.method!r} integrates along no path; path= is for "
                                 f"{[m.name for m in methods() if m.uses_path]}")  # fmt: skip
            if not callable(getattr(self.path, "bind", None)):
                raise TypeError(f"path must be an IntegrationPath (interval() and bind()), "
                                f"got {type(self.path).__name__}")  # fmt: skip
            interval_of(self.path)
            if record.path_types and not isinstance(self.path, record.path_types):
                kinds = ", ".join(t.__name__ for t in record.path_types)
                raise ValueError(f"method={self.method!r} integrates along a {kinds}, got a "
                                 f"{type(self.path).__name__}; use method='conductance' for conductance along another "
                                 "path")  # fmt: skip
            if changed:
                raise ValueError(f"pass either path= or the mask options {changed}, not both (the mask options "
                                 "build the default path of method='mac')")  # fmt: skip
        elif changed and not (record.uses_path and isinstance(record.default_path(self), MaskAttributionPath)):
            raise ValueError(f"the mask options {changed} build the mask attribute path of method='mac'; "
                             f"method={self.method!r} does not use it")  # fmt: skip

    def normalization(self) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
        """``normalize`` as (mean, std) per channel, or ``None``."""
        if self.normalize is None:
            return None
        if isinstance(self.normalize, str):
            check_choice("normalize", self.normalize, list(NORMALIZATIONS))
            return NORMALIZATIONS[self.normalize]
        try:
            mean, std = (tuple(float(v) for v in values) for values in self.normalize)
        except (TypeError, ValueError):
            raise TypeError(f"normalize must be 'imagenet' or (mean, std), one value per channel each, got "
                            f"{self.normalize!r}") from None  # fmt: skip
        if not mean or len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"normalize needs as many means as standard deviations, all of these > 0, got "
                             f"{self.normalize!r}")  # fmt: skip
        return mean, std

    @property
    def method_record(self) -> Method:
        """The registered [`Method`][macattr.ranking.methods.Method] of these settings."""
        return get_method(self.method)

    @classmethod
    def ram_code(cls, n_steps: int = 200, mask_ratio: float = 0.5, sharpness: float = 1e4, seed: int = 0,
                 **settings: Any) -> RankSettings:  # fmt: skip
        """MAC as the RAM authors' analysis code computes it, for comparing with their numbers.

        Their grid is ``α_j = 1 − r + j r / N`` for j = 0 … N − 1: N points that stop at ``1 − r / N`` and never
        reach the whole image, here N − 1 intervals of a mask path that ends there (``n_steps`` of the record is
        N − 1). Each step takes the gradient at its end (``rule="right"``), the pixel order of each image is
        ``numpy.random.RandomState(s).permutation`` with the image's seed ``s`` (``order="numpy"``), their mask
        reveals the pixel at position ``i`` of that order (from 0) with ``σ(δ (α − i / K))`` and leaves every
        pixel from position ``⌈K α⌉`` on exactly at the baseline (``cut=True``), the images are normalised with
        ImageNet's mean and standard deviation before the path (their zero baseline is the mean colour), and
        ``top_k`` rounds a fraction of the layers down. Their runs draw the orders of all images from numpy's
        global stream, seeded once and shared with their data loading; no seed reproduces those draws, so each
        image here gets its own seeded order (the numbers differ from a run of theirs only by that draw). They
        hook every module that owns parameters, which are macattr's default candidates; they take one image and
        one grid point per pass, which changes no number. ``settings`` are other fields (``target``,
        ``samples_per_group``, ...).

        Examples:
            >>> authors = RankSettings.ram_code(n_steps=16)
            >>> authors.n_steps, authors.rule, authors.integration_path().interval()
            (15, 'right', (0.5, 0.96875))
        """
        check_int("n_steps", n_steps, 2)
        path = MaskAttributionPath(mask_ratio, sharpness, order="numpy", end=1.0 - mask_ratio / n_steps, cut=True)
        return cls("mac", n_steps=n_steps - 1, rule="right", path=path, normalize="imagenet", seed=seed,
                   k_rounding="down", **settings)  # fmt: skip

    @classmethod
    def from_options(cls, method: Optional[str], settings: Optional[RankSettings],
                     options: Mapping[str, Any]) -> RankSettings:  # fmt: skip
        """``settings`` (or the defaults) with ``method`` and ``options`` (field name → value) applied.

        ``method=None`` keeps the settings' method; a ``method`` that differs from ``settings.method`` is a
        ``ValueError`` naming both.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"rank_layers got unknown options {unknown}; settings are {sorted(known - {'method'})}")
        if settings is not None and not isinstance(settings, RankSettings):
            raise TypeError(f"settings must be RankSettings or None, got {type(settings).__name__}")
        base = {f.name: getattr(settings, f.name) for f in fields(cls)} if settings is not None else {}
        if method is not None and settings is not None and get_method(method).name != settings.method:
            raise ValueError(f"method={method!r} conflicts with settings.method={settings.method!r}; pass one of "
                             "them (or dataclasses.replace(settings, method=...))")  # fmt: skip
        if method is not None:
            base["method"] = method
        return cls(**{**base, **options})

    def mask_path(self, seeds: Optional[List[int]] = None) -> MaskAttributionPath:
        """The mask attribute path of the five mask options, with one threshold seed per image when given."""
        return MaskAttributionPath(self.mask_ratio, self.sharpness, self.patch_size, seed=seeds,
                                   mask_dims=self.mask_dims, ramp=self.ramp)  # fmt: skip

    def integration_path(self) -> Optional[IntegrationPath]:
        """The path the method integrates along: ``path``, or the method's default; ``None`` for a method
        without a path."""
        record = self.method_record
        if not record.uses_path:
            return None
        return self.path if self.path is not None else record.default_path(self)

    @property
    def target_name(self) -> Union[str, int, list]:
        """The target as written into files: its name, index, index list, or the callable's name."""
        if isinstance(self.target, (str, int)):
            return self.target
        if isinstance(self.target, tuple):
            return list(self.target)
        return getattr(self.target, "__name__", "custom")

    def to_config(self) -> Dict[str, Any]:
        """The JSON record of the settings that decide the scores (what a checkpoint must match to resume).

        The method is recorded beside it, batching (``internal_batch_size``) is left out (it does not change
        scores), and so are the settings the method does not read: a method without a path has no ``path``,
        ``n_steps`` or ``baselines``, and the mask options are recorded as the mask path they build.
        """
        config: Dict[str, Any] = {"target": self.target_name}
        if self.output is not None:
            config["output"] = json_value(self.output)
        if self.input_name is not None:
            config["input_name"] = self.input_name
        if self.normalize is not None:
            config["normalize"] = json_value(self.normalization())
        path = self.integration_path()
        if path is not None:
            config.update(n_steps=self.n_steps, path=describe_path(path), baselines=json_value(self.baselines))
        if self.method_record.step_rule:
            config["rule"] = self.rule
        config.update(seed=self.seed, samples_per_group=self.samples_per_group, max_images=self.max_images,
                      train_mode=self.train_mode)  # fmt: skip
        if self.k_rounding != "up":
            config["k_rounding"] = self.k_rounding
        if self.until_stable is not None:
            config["until_stable"] = self.until_stable.to_config()
        return config


_DEFAULTS = {f.name: f.default for f in fields(RankSettings)}

__all__ = [
    "NORMALIZATIONS",
    "RankSettings",
    "TargetSpec",
    "UntilStable",
]
