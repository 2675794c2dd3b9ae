"""Rank the candidate layers of a model over a data set, and pick the top k.

``rank_layers`` runs one attribution sweep per batch for all candidate layers at
once, turns each layer's per-neuron attribution into one number per image (the
mean over its neurons of ``|attribution|``) and sums it over the images
(:class:`ScoreSum`, torchmetrics-style ``update()``/``compute()``). Long runs
write a checkpoint after every batch and resume from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from macattr import targets as target_lib
from macattr._checks import check_int, check_real
from macattr._io import PathLike, write_text_atomic
from macattr.attribution import LayerMAC, LayerPathConductance, LayerPathInternalInfluence
from macattr.layers import LayerSpecs, candidate_layers
from macattr.paths import LinearPath, random_thresholds
from macattr.safety import preserved_state
from macattr.scores import LayerScores, resolve_k

ATTRIBUTION_METHODS = ("mac", "ig", "conductance")
METHODS = ATTRIBUTION_METHODS + ("gradnorm", "random", "uniform")
Target = Union[str, int, tuple, Callable[[Tensor], Tensor]]


class ScoreSum:
    """Running per-layer sums of per-image scores.

    ``update(per_image)`` adds a (B, L) tensor of scores for B images;
    ``compute()`` gives the sums; ``merge`` adds another ``ScoreSum`` (from another
    process or shard); ``state_dict``/``load_state_dict`` round-trip through JSON.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.sums = np.zeros(len(self.names), dtype=np.float64)
        self.images = 0

    def update(self, per_image: Tensor) -> None:
        if per_image.dim() != 2 or per_image.shape[1] != len(self.names):
            raise ValueError(f"per_image must have shape (B, {len(self.names)}), got {tuple(per_image.shape)}")
        self.sums += per_image.detach().double().sum(0).cpu().numpy()
        self.images += per_image.shape[0]

    def merge(self, other: ScoreSum) -> None:
        if other.names != self.names:
            raise ValueError("ScoreSum.merge needs the same layers in the same order")
        self.sums += other.sums
        self.images += other.images

    def compute(self) -> Dict[str, float]:
        return dict(zip(self.names, self.sums.tolist()))

    def state_dict(self) -> Dict[str, Any]:
        return {"names": self.names, "sums": self.sums.tolist(), "images": self.images}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError("the checkpoint was written for other layers")
        self.sums = np.asarray(state["sums"], dtype=np.float64)
        self.images = int(state["images"])


def batch_inputs(batch: Any) -> Tensor:
    """The input images of a batch: a tensor, the first item of a tuple/list, or ``"lq"``/``"input"`` of a dict."""
    return batch_pair(batch, need_target=False)[0]


def batch_pair(batch: Any, need_target: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """(input, ground truth) of a batch: ``(x, y, ...)`` or a dict with ``"lq"``/``"input"``, ``"gt"``/``"target"``."""
    if isinstance(batch, Tensor):
        x, y = batch, None
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        x, y = batch[0], (batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None)
    elif isinstance(batch, Mapping) and ("lq" in batch or "input" in batch):
        x = batch["lq"] if "lq" in batch else batch["input"]
        y = batch.get("gt", batch.get("target"))
    else:
        raise TypeError(
            "a loader batch must be a tensor, a tuple/list whose first item is the input tensor, "
            f"or a dict with 'lq' or 'input'; got {type(batch).__name__}"
        )
    if need_target and not isinstance(y, Tensor):
        raise TypeError("method='gradnorm' needs (input, ground truth) batches: (x, y) or {'lq': x, 'gt': y}")
    return x, y


def _group_keys(batch: Any, group: Union[None, str, Callable[[Any], Sequence[Hashable]]], size: int) -> List:
    if group is None:
        return [None] * size
    keys = batch[group] if isinstance(group, str) else group(batch)
    keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
    if len(keys) != size:
        raise ValueError(f"group must give one key per sample in the batch ({size}), got {len(keys)}")
    return keys


def image_seed(seed: int, index: int) -> int:
    """The threshold seed of image ``index``: independent of batch size and batch position."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _neuron_means(attributions: Sequence[Any], n_images: int) -> Tensor:
    """Per layer, mean over its neurons of |attribution|: list of (B·k, ...) or tuples → (B, L).

    A layer whose rows are ``k`` per image (window attention: (B · windows, n, C))
    has all ``k`` rows of an image counted as that image's neurons.
    """
    columns = []
    for attribution in attributions:
        tensors = attribution if isinstance(attribution, tuple) else (attribution,)
        flat = torch.cat([t.detach().abs().reshape(n_images, -1).double() for t in tensors], dim=1)
        columns.append(flat.mean(1))
    return torch.stack(columns, dim=1)


def _forward_and_target(model: nn.Module, target: Target) -> Tuple[Callable, Any]:
    if isinstance(target, str):
        return target_lib.from_name(model, target), None
    if callable(target):
        return target_lib.ReducedModel(model, target, getattr(target, "__name__", "custom")), None
    return model, target  # Captum-style class index for classifiers


def _attribution_scores(
    method: str, forward: Callable, target: Any, modules: List[nn.Module], x: Tensor, first_index: int, s: Dict
) -> Tensor:
    common = dict(
        baselines=s["baselines"],
        target=target,
        n_steps=s["n_steps"],
        internal_batch_size=s["internal_batch_size"],
    )
    if method == "mac":
        p, (height, width) = s["patch_size"], x.shape[-2:]
        thresholds = torch.cat(
            [
                random_thresholds(
                    1,
                    height // p,
                    width // p,
                    torch.Generator().manual_seed(image_seed(s["seed"], first_index + i)),
                    x.device,
                )
                for i in range(x.shape[0])
            ]
        )
        attributions = LayerMAC(forward, modules).attribute(
            x, mask_ratio=s["mask_ratio"], sharpness=s["sharpness"], patch_size=s["patch_size"],
            thresholds=thresholds, **common,
        )  # fmt: skip
    elif method == "ig":
        attributions = LayerPathInternalInfluence(forward, modules, path=LinearPath()).attribute(x, **common)
    else:
        attributions = LayerPathConductance(forward, modules, path=LinearPath()).attribute(x, **common)
    return _neuron_means(attributions, x.shape[0])


def _gradnorm_scores(model: nn.Module, modules: List[nn.Module], x: Tensor, y: Tensor, loss: Callable) -> Tensor:
    """Relative gradient norm ``‖∇_θ L‖ / ‖θ‖`` of each layer's own parameters, times the batch size: (1, L)."""
    params = [list(m.parameters(recurse=False)) for m in modules]
    if any(not p for p in params):
        raise ValueError("method='gradnorm' needs layers that own parameters")
    flat = [p for group in params for p in group]
    with torch.enable_grad():
        for p in flat:
            p.requires_grad_(True)
        value = loss(model(x), y)
        grads = torch.autograd.grad(value, flat, allow_unused=True)
    by_id = {id(p): g for p, g in zip(flat, grads)}
    scores = []
    for group in params:
        grad_norm = math.sqrt(
            sum(float(by_id[id(p)].double().square().sum()) for p in group if by_id[id(p)] is not None)
        )
        weight_norm = math.sqrt(sum(float(p.detach().double().square().sum()) for p in group))
        scores.append(grad_norm / max(weight_norm, 1e-12))
    return torch.tensor([scores], dtype=torch.float64) * x.shape[0]


def _van_der_corput(i: int) -> float:
    """The i-th point of the base-2 van der Corput sequence: the bits of i mirrored behind the point."""
    position, base = 0.0, 0.5
    while i:
        position, i, base = position + base * (i & 1), i >> 1, base / 2
    return position


def _structural_scores(method: str, names: List[str], seed: int) -> Dict[str, float]:
    """``random``: seeded uniform scores. ``uniform``: van der Corput order through depth, so every top-k is spread."""
    count = len(names)
    if method == "random":
        values = torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        return dict(zip(names, values))
    # points i < 2^(m+1) with 2^m >= count land in every one of the count buckets of [0, 1)
    buckets = (int(_van_der_corput(i) * count) for i in range(1, 2 ** (count.bit_length() + 1)))
    order = list(dict.fromkeys(buckets))
    return {names[index]: 1.0 - rank / count for rank, index in enumerate(order)}


def _settings(
    method: str, target: Target, n_steps: int, mask_ratio: float, sharpness: float, patch_size: int,
    baselines: Union[float, Tensor], seed: int, samples_per_group: Optional[int], max_images: Optional[int],
    internal_batch_size: Optional[int],
) -> Dict[str, Any]:  # fmt: skip
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    check_int("n_steps", n_steps, 1)
    check_int("seed", seed, 0)
    check_real("mask_ratio", mask_ratio, low=0.0, high=1.0, low_open=True)
    check_real("sharpness", sharpness, low=0.0, low_open=True, allow_inf=True)
    check_int("patch_size", patch_size, 1)
    if samples_per_group is not None:
        check_int("samples_per_group", samples_per_group, 1)
    if max_images is not None:
        check_int("max_images", max_images, 1)
    if internal_batch_size is not None:
        check_int("internal_batch_size", internal_batch_size, 1)
    if not isinstance(target, (str, int, tuple)) and not callable(target):
        raise TypeError(f"target must be a name, a class index, a tuple or a callable, got {type(target).__name__}")
    if not isinstance(baselines, (int, float, Tensor)) or isinstance(baselines, bool):
        raise TypeError(f"baselines must be a number or a tensor, got {type(baselines).__name__}")
    name = target if isinstance(target, (str, int, tuple)) else getattr(target, "__name__", "custom")
    return dict(
        method=method, target=name,
        n_steps=n_steps, mask_ratio=mask_ratio, sharpness=sharpness, patch_size=patch_size,
        baselines=baselines, seed=seed, samples_per_group=samples_per_group, max_images=max_images,
        internal_batch_size=internal_batch_size,
    )  # fmt: skip


def _config(settings: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    """The JSON-able record of the settings (what a checkpoint must match to be resumed)."""
    config = {k: v for k, v in settings.items() if k not in ("method", "baselines", "internal_batch_size")}
    config["sharpness"] = "inf" if math.isinf(settings["sharpness"]) else settings["sharpness"]
    config["target"] = list(config["target"]) if isinstance(config["target"], tuple) else config["target"]
    base = settings["baselines"]
    config["baselines"] = float(base) if not isinstance(base, Tensor) else f"tensor{tuple(base.shape)}"
    config["layers"] = names
    return config


def _kept_samples(keys: List, groups: Dict[str, int], per_group: Optional[int], room: Optional[int]) -> List[int]:
    """Indices of the samples to analyse; counts them into ``groups`` (group key → images taken so far)."""
    keep = []
    for index, key in enumerate(keys):
        name = json.dumps(key, default=str)
        if (per_group is not None and groups.get(name, 0) >= per_group) or (room is not None and len(keep) >= room):
            continue
        keep.append(index)
        groups[name] = groups.get(name, 0) + 1
    return keep


def _load_checkpoint(path: Path, method: str, config: Dict[str, Any], total: ScoreSum) -> Dict[str, Any]:
    if not path.exists():
        return {"consumed": 0, "groups": {}, "complete": False}
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("method") != method or state.get("config") != config:
        raise ValueError(
            f"checkpoint {path} was written by another run (method or settings differ); "
            "delete it or pass another checkpoint path"
        )
    total.load_state_dict(state["scores"])
    return {"consumed": state["consumed"], "groups": state["groups"], "complete": state["complete"]}


def rank_layers(
    model: nn.Module,
    loader: Optional[Iterable[Any]] = None,
    method: str = "mac",
    *,
    target: Target = "gradient_magnitude",
    layers: Optional[LayerSpecs] = None,
    exclude: Optional[LayerSpecs] = None,
    n_steps: int = 200,
    mask_ratio: float = 0.5,
    sharpness: float = 1e4,
    patch_size: int = 1,
    baselines: Union[float, Tensor] = 0.0,
    seed: int = 0,
    samples_per_group: Optional[int] = None,
    group: Union[None, str, Callable[[Any], Sequence[Hashable]]] = None,
    max_images: Optional[int] = None,
    loss: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    device: Union[None, str, torch.device] = None,
    internal_batch_size: Optional[int] = None,
    progress: bool = True,
    checkpoint: Optional[PathLike] = None,
) -> LayerScores:
    """Score every candidate layer of ``model`` over the images of ``loader``.

    Args:
        model: an image model (N, C, H, W) → (N, C', H', W') (or a classifier with
            an integer ``target``).
        loader: an iterable of batches: tensors (B, C, H, W), tuples/lists whose
            first item is the input, or dicts with ``"lq"`` (BasicSR/RAM) or
            ``"input"``. Not needed for "random" and "uniform".
        method: "mac" (DESIGN.md defaults), "ig" (internal influence along the
            linear path), "conductance" (linear path), "gradnorm" (relative
            gradient norm of each layer's parameters under ``loss``, default L1,
            on (input, ground truth) batches), "random" (seeded) or "uniform"
            (evenly spread through depth).
        target: "gradient_magnitude" (default), "sum", "mean", a callable
            reducing the output (N, ...) → (N,), or a Captum class index.
        layers, exclude: narrow or widen the candidates (see :func:`candidate_layers`).
        n_steps, mask_ratio, sharpness, patch_size, baselines: the path settings.
        seed: thresholds of image ``i`` come from ``(seed, i)``, so scores do not
            depend on the batch size.
        samples_per_group, group: keep only the first ``samples_per_group``
            images of each group; ``group`` is a dict key of the batch or a
            function of the batch giving one key per sample (RAM: 10 per degradation).
        max_images: stop after this many images.
        device: run on this device (the model is moved there and back).
        internal_batch_size: rows per forward pass (see ``LayerMAC.attribute``).
        progress: show a progress bar.
        checkpoint: a JSON file updated atomically after every batch; a run with
            the same settings resumes from it (the loader must yield the same
            batches in the same order).

    Returns:
        :class:`LayerScores`: per layer the sum over images of the mean over its
        neurons of ``|attribution|``.
    """
    names_to_modules = candidate_layers(model, layers, exclude)
    names, modules = list(names_to_modules), list(names_to_modules.values())
    settings = _settings(
        method, target, n_steps, mask_ratio, sharpness, patch_size, baselines, seed,
        samples_per_group, max_images, internal_batch_size,
    )  # fmt: skip
    config = _config(settings, names)
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if method in ("random", "uniform"):
        return LayerScores(_structural_scores(method, names, seed), method, config)
    if loader is None:
        raise ValueError(f"method={method!r} needs a loader of images")
    if isinstance(loader, Tensor):
        loader = [loader]
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader must be an iterable of batches, got {type(loader).__name__}")
    if samples_per_group is not None and group is None:
        group = lambda batch: [None] * batch_inputs(batch).shape[0]  # noqa: E731 - one group: the first n images

    total = ScoreSum(names)
    path = Path(checkpoint) if checkpoint is not None else None
    state = _load_checkpoint(path, method, config, total) if path else {"consumed": 0, "groups": {}, "complete": False}
    if state["complete"]:
        return LayerScores(total.compute(), method, config, total.images)

    original_device = next(model.parameters(), torch.empty(0)).device
    with preserved_state(model.modules()):
        try:
            if device is not None:
                model.to(device)
            run_device = next(model.parameters(), torch.empty(0)).device
            forward, class_target = _forward_and_target(model, target)
            loss_fn = loss if loss is not None else (lambda out, gt: (out - gt).abs().mean())
            consumed, groups = 0, dict(state["groups"])
            bar = tqdm(loader, disable=not progress, unit="batch", desc=f"rank_layers[{method}]", leave=False)
            for batch in bar:
                x, y = batch_pair(batch, need_target=method == "gradnorm")
                size = x.shape[0]
                if consumed + size <= state["consumed"]:
                    consumed += size
                    continue
                room = None if max_images is None else max_images - total.images
                keep = _kept_samples(_group_keys(batch, group, size), groups, samples_per_group, room)
                consumed += size
                if keep:
                    x_kept = x[keep].to(run_device)
                    if method == "gradnorm":
                        scores = _gradnorm_scores(model, modules, x_kept, y[keep].to(run_device), loss_fn)
                    else:
                        scores = _attribution_scores(
                            method, forward, class_target, modules, x_kept, total.images, settings
                        )
                    total.update(scores)
                    bar.set_postfix(images=total.images)
                done = max_images is not None and total.images >= max_images
                if path:
                    _save_checkpoint(path, method, config, total, consumed, groups, complete=done)
                if done:
                    break
            if path:
                _save_checkpoint(path, method, config, total, consumed, groups, complete=True)
        finally:
            if device is not None:
                model.to(original_device)
    if total.images == 0:
        raise ValueError("the loader yielded no images to rank")
    return LayerScores(total.compute(), method, config, total.images)


def _save_checkpoint(
    path: Path, method: str, config: Dict, total: ScoreSum, consumed: int, groups: Dict, complete: bool
) -> None:
    document = {
        "method": method,
        "config": config,
        "scores": total.state_dict(),
        "consumed": consumed,
        "groups": groups,
        "complete": complete,
    }
    write_text_atomic(path, json.dumps(document) + "\n")


def select_top_k(
    model: nn.Module, loader: Optional[Iterable[Any]] = None, k: Union[int, float] = 0.1, **rank_kwargs: Any
) -> List[str]:
    """Names of the ``k`` most important layers, best first (RAM: k = 0.1 of the candidates).

    ``k`` in (0, 1] is a fraction of the candidate layers rounded up (at least
    one); an int is a count. ``rank_kwargs`` go to :func:`rank_layers`.
    """
    count = len(candidate_layers(model, rank_kwargs.get("layers"), rank_kwargs.get("exclude")))
    resolve_k(k, count)  # refuse a bad k before the expensive ranking
    return rank_layers(model, loader, **rank_kwargs).top_k(k)
