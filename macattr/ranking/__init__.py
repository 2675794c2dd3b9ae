"""Rank the candidate layers of a model over a data set, and pick the top k.

``rank_layers`` runs one attribution sweep per batch for all candidate layers at
once, turns each layer's per-neuron attribution into one number per image (the
mean over its neurons of ``|attribution|``) and sums it over the images. Its
parts: [`RankSettings`][macattr.ranking.settings.RankSettings] (what decides the numbers), the batch
walk ([`macattr.ranking.batches`][macattr.ranking.batches]), the scorers
([`macattr.ranking.scorers`][macattr.ranking.scorers]) and checkpoints
([`macattr.ranking.checkpoint`][macattr.ranking.checkpoint]).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Sized, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from macattr._checks import check_device, check_model_usable
from macattr._compiled import eager
from macattr._state import preserved_state
from macattr.accumulators import ScoreSum
from macattr.engine import planning_passes
from macattr.files import PathLike, exclusive
from macattr.finetune import parameter_counts
from macattr.layers import LayerSpecs, candidate_layers, execution_order
from macattr.placement import input_device, is_sharded, offloaded
from macattr.ranking.batches import Group, Selected, Selection, analysed_batches, batch_pair, fingerprint
from macattr.ranking.checkpoint import Checkpoint, Progress, StreamCursor, process_path
from macattr.ranking.distributed import Shard, current_shard
from macattr.ranking.keywords import BatchKeywords, ForwardKwargs
from macattr.ranking.methods import Method
from macattr.ranking.scorers import ImageScores, Scorer, ScoringContext
from macattr.ranking.settings import RankSettings, UntilStable
from macattr.records import callable_identity, model_digest
from macattr.scores import LayerScores, check_k, check_tolerance, resolve_k
from macattr.segments import remedy
from macattr.selection import check_strategy
from macattr.targets import NAMED_TARGETS, ReducedModel

__all__ = ["RankSettings", "UncertifiedError", "UncertifiedWarning", "UntilStable", "rank_layers", "select_top_k"]


def rank_layers(
    model: nn.Module,
    loader: Optional[Iterable[Any]] = None,
    method: Optional[str] = None,
    *,
    settings: Optional[RankSettings] = None,
    layers: Optional[LayerSpecs] = None,
    exclude: Optional[LayerSpecs] = None,
    group: Group = None,
    loss: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    device: Union[None, str, torch.device] = None,
    progress: bool = True,
    checkpoint: Optional[PathLike] = None,
    distributed: Optional[bool] = None,
    forward_kwargs: ForwardKwargs = None,
    tolerance: float = 0.1,
    strict: bool = False,
    **options: Any,
) -> LayerScores:
    """Score every candidate layer of ``model`` over the images of ``loader``.

    Args:
        model: an image model (N, C, H, W) → (N, C', H', W'), or a classifier
            with an integer ``target``.
        loader: an iterable of batches: tensors (B, C, H, W), tuples/lists whose
            first item is the input, or dicts with ``"lq"`` (BasicSR/RAM) or
            ``"input"``. Not needed for a method that scores without images (an order such as "random" or
            "last": ``needs_loader`` is false in its record), which then follows registration order instead of
            depth.
        method: the name or alias of a registered method ([`macattr.ranking.methods`][macattr.ranking.methods];
            ``macattr.ranking.methods.names()`` lists them, the Ranking and selection page describes each).
            ``None``: the method of ``settings`` ("mac" without settings); a method that differs from
            ``settings.method`` is refused.
        settings: a [`RankSettings`][macattr.ranking.settings.RankSettings]; ``options`` override its fields.
        layers: which modules are candidates (see [`candidate_layers()`][macattr.layers.candidate_layers]).
        exclude: modules to leave out of the candidates.
        group: a dict key of the batch, or a function of the batch giving one
            key per sample, for ``samples_per_group`` (RAM: 10 per degradation).
        loss: for the methods that need ground truth ("gradnorm", "fisher"): ``loss(output, ground_truth)`` of
            one image at a time (batch of 1) → a scalar; default the mean absolute error (L1, averaged over the
            elements).
        device: run on this device (the model is moved there and back).
        progress: show a progress bar.
        checkpoint: a JSON file updated atomically after every batch; a run with
            the same settings and the same images resumes from it, whatever
            its batch sizes (one file per process under ``torch.distributed``,
            and then the same number of processes and batches).
        distributed: share the batches among the processes of the initialised
            ``torch.distributed`` group (None: whenever one is initialised;
            False: never). Every process gets the same loader and returns the
            same scores; see [`macattr.ranking.distributed`][macattr.ranking.distributed].
        forward_kwargs: keyword arguments of every call of the model besides its input: a dict (the same for
            every batch; a diffusion UNet's ``{"timestep": t}``) or a function of the loader's batch returning one
            (``lambda batch: {"attention_mask": batch["mask"]}``). A tensor whose first dimension is the batch's
            size is per sample: it follows the analysed samples and every grid point. Recorded in checkpoints.
        tolerance: the relative error the scores must be within (in (0, 1)): a ranking by "mac" or
            "conductance" estimates every score's error against the integral along its path and every image's
            completeness gap at the input ([`LayerScores.certificate()`][macattr.scores.LayerScores.certificate]),
            and warns when a layer or an image is over it.
        strict: refuse (``UncertifiedError``, a ``ValueError``) instead of warning.
        **options: fields of [`RankSettings`][macattr.ranking.settings.RankSettings] (``target``, ``n_steps``,
            ``path`` (any [`IntegrationPath`][macattr.paths.IntegrationPath], e.g. ``BlurPath(2.0)``),
            ``mask_ratio``, ``sharpness``, ``patch_size``, ``mask_dims``, ``baselines``, ``seed``,
            ``samples_per_group``, ``max_images``, ``internal_batch_size``, ``train_mode``).

    Returns:
        [`LayerScores`][macattr.scores.LayerScores] in depth order (the order in which the
        layers run, recorded once with hooks): per layer the sum over images of
        the method's per-image score (for attribution methods the mean over its
        neurons of ``|attribution|``; each record's ``score`` says what it is).
        Layers that do not run, or (for attribution methods) run more than once
        per forward pass, are skipped with one warning and listed in ``.skipped``.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> images = [torch.rand(2, 3, 8, 8) for _ in range(2)]
        >>> scores = rank_layers(model, images, n_steps=8, seed=0, progress=False)
        >>> scores.images, scores.names
        (4, ['0', '2'])
    """
    settings = RankSettings.from_options(method, settings, options)
    check_tolerance(tolerance)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = eager(model, warn=True)  # a torch.compile'd model's layers run no hooks: its original module's do
    candidates = candidate_layers(model, layers, exclude)
    counts = parameter_counts(model, candidates)  # before anything touches requires_grad
    device, shard = check_device("device", device), current_shard(distributed)
    _check_placement(model, settings.method_record, device)
    if is_sharded(model):
        shard = replace(shard, lockstep=shard.world > 1)
    if not settings.method_record.needs_loader and loader is None:
        return _counted(_in_registration_order(settings, candidates), counts)
    if settings.method_record.needs_loader:
        check_model_usable(model.named_modules())
    batches = _nonempty(loader, settings.method)
    if settings.until_stable is not None:
        _check_passes(batches, checkpoint, shard)
    with (
        ExitStack() as held,
        _on_device(model, device),
        preserved_state(model.modules(), settings.train_mode),
    ):
        if checkpoint is not None:  # one run at a time on a checkpoint: another is refused, naming this process
            mine = process_path(Path(checkpoint), shard.rank, shard.world)
            shard.guard(lambda: held.enter_context(exclusive(mine, "checkpoint")))
        shard.guard(lambda: shard.check_same_model(model))  # one model in every process, or none at all
        keywords = BatchKeywords(forward_kwargs)
        scoring = shard.guard(lambda: _prepare(model, batches, candidates, settings, checkpoint, loss, shard,
                                               keywords, group))  # fmt: skip
        if isinstance(scoring, LayerScores):  # random, uniform, last: depth order was all they needed
            return _counted(scoring, counts)
        if settings.until_stable is None:  # a finished checkpoint still reads the loader: its images are checked
            scoring.run(group, shard, progress, Selection(settings.samples_per_group, settings.max_images))
            scores = _counted(_scores_of(scoring, shard), counts)
        else:
            scores = _until_stable(scoring, batches, group, shard, progress, counts)
    return _judged(scores, tolerance, strict)


class UncertifiedError(ValueError):
    """A ranking whose estimated error exceeds its tolerance, refused under ``strict=True``."""


class UncertifiedWarning(UserWarning):
    """A ranking whose estimated error exceeds its tolerance (``strict=False``): filter by this category."""


def _judged(scores: LayerScores, tolerance: float, strict: bool) -> LayerScores:
    """``scores``, after a warning (or under ``strict``, a refusal) when their certificate is over ``tolerance``,
    and a warning when a quarter of the layers or more score exactly 0."""
    zeros = [name for name, value in scores.items() if value == 0.0]
    if scores.images and len(zeros) >= 2 and len(zeros) >= 0.25 * len(scores):
        message = (f"rank_layers: {len(zeros)} of {len(scores)} layers score exactly 0 (first: {', '.join(zeros[:3])}"
                   "): nothing the input does reaches them, as in an untrained model with zero-initialised layers; "
                   "check that the weights were loaded")  # fmt: skip
        warnings.warn(message, UserWarning, stacklevel=3)
    if scores.errors is None:
        return scores
    verdict = scores.certificate(tolerance)
    if verdict.trusted:
        return scores
    rule, path = scores.config.get("rule", "left"), scores.config.get("path")
    ramp = isinstance(path, dict) and bool(path.get("ramp"))
    message = (f"rank_layers: {verdict.summary()}; over: {verdict.over[:5]}{' ...' if len(verdict.over) > 5 else ''}"
               f". Remedies: {remedy(rule, ramp=ramp)}")  # fmt: skip
    if strict:
        raise UncertifiedError(message + " (strict=True refuses the scores)")
    warnings.warn(message, UncertifiedWarning, stacklevel=3)
    return scores


def _check_placement(model: nn.Module, method: Method, device: Optional[torch.device]) -> None:
    """What a sharded or offloaded model cannot give. A sharded model (FSDP2) runs every pass on all processes
    together, and an offloaded one (accelerate) loads its weights for each pass and puts them back: only methods
    whose passes are sweeps along a path can rank them, and a model dispatched by accelerate stays where its
    device map puts it."""
    dispatched = any(hasattr(module, "_hf_hook") for module in model.modules())
    if device is not None and dispatched:
        raise ValueError(f"device={str(device)!r} would move a model that accelerate dispatched (device_map): its "
                         "hooks move every input to its layers' devices; leave device out")  # fmt: skip
    if method.scorer is None or method.uses_path:
        return
    if is_sharded(model):
        raise ValueError(f"method={method.name!r} reads the gradients of each layer's own parameters, which a sharded "
                         "model (FSDP2's fully_shard) holds in shards reduced across its processes; rank it with a "
                         "path method (mac, conductance, internal_influence), or rank the unsharded model")  # fmt: skip
    away = offloaded(model)
    if away:
        raise ValueError(f"method={method.name!r} reads the gradients of each layer's own parameters, and "
                         f"{len(away)} of them (first: {away[0]}) are offloaded (device_map with offload): accelerate "
                         "loads them for each pass, so their gradients never reach them; rank with a path method "
                         "(mac, conductance, internal_influence), or load the model without offload")  # fmt: skip


def _check_passes(batches: Iterable[Any], checkpoint: Optional[PathLike], shard: Shard) -> None:
    """``until_stable`` reads the loader once per pass, in one process, without a checkpoint."""
    if iter(batches) is batches:
        raise TypeError("until_stable reads the loader once per pass; pass one that can be iterated again (a list, "
                        "a DataLoader), not an iterator or generator")  # fmt: skip
    if checkpoint is not None:
        raise ValueError("until_stable does not resume from a checkpoint; pass checkpoint=None, or a fixed number of "
                         "images (samples_per_group, max_images) with the checkpoint")  # fmt: skip
    if shard.world > 1:
        raise ValueError("until_stable runs in one process; under torch.distributed pass distributed=False, or a "
                         "fixed number of images (samples_per_group, max_images)")  # fmt: skip


def _scores_of(scoring: _Scoring, shard: Shard, stopped: Optional[Dict[str, Any]] = None) -> LayerScores:
    """The scores summed so far (over every process), with their per-image rows; ``stopped`` goes into the
    config."""
    shard.combine(scoring.total)
    if scoring.total.images == 0:
        raise ValueError("the loader yielded no images to rank")
    rows, groups = scoring.total.rows()
    complete = len(rows) == scoring.total.images  # a checkpoint written without per-image scores lacks some
    errors, gaps = scoring.total.certificate() if complete else (None, None)
    config = scoring.config if stopped is None else {**scoring.config, "stopped": stopped}
    sources = scoring.total.source_labels() if complete and scoring.total.sources else None
    return LayerScores(scoring.total.compute(), scoring.settings.method, config, scoring.total.images,
                       scoring.skipped, per_image=rows if complete else None,
                       groups=groups if complete else None, errors=errors, input_gaps=gaps,
                       sources=sources)  # fmt: skip


def _until_stable(scoring: _Scoring, loader: Iterable[Any], group: Group, shard: Shard, progress: bool,
                  counts: Tuple[Dict[str, int], int]) -> LayerScores:  # fmt: skip
    """Passes over ``loader`` with more images of every group each time (``UntilStable``), until the
    bootstrap says the top k stays the same or no images are left."""
    settings, rule = scoring.settings, scoring.settings.until_stable
    analysed: Counter = Counter()
    quota, earlier, passes, same = rule.min_per_group, 0, 0, None
    while True:
        if settings.samples_per_group is not None:
            quota = min(quota, settings.samples_per_group)
        limit = settings.max_images if group is not None else min(quota, settings.max_images or quota)
        before = scoring.total.images
        selection = Selection(quota if group is not None else None, limit, earlier, analysed=before)
        scoring.run(group, shard, progress, selection, analysed)
        scoring.batches, passes = loader, passes + 1
        if scoring.total.images == before:
            break
        scores = _counted(_scores_of(scoring, shard), counts)
        if scores.bootstrappable:
            same = scores.confidence(rule.k, rule.budget, resamples=rule.resamples, seed=settings.seed).same_top_k
            if same >= rule.threshold:
                break
        earlier, quota = quota, rule.next_quota(quota)
    stopped = {"passes": passes, "images": scoring.total.images, "same_top_k": same,
               "reached": same is not None and same >= rule.threshold}  # fmt: skip
    if not stopped["reached"]:
        found = "too few images per group for a bootstrap" if same is None else f"P(same top k) = {same:.3f}"
        warnings.warn(f"until_stable={rule.threshold}: no images left to add (the loader, samples_per_group or "
                      f"max_images) after {scoring.total.images}, with {found}; the top k is less certain than "
                      "asked", UserWarning, stacklevel=3)  # fmt: skip
    return _counted(_scores_of(scoring, shard, stopped), counts)


def _counted(scores: LayerScores, counts: Tuple[Dict[str, int], int]) -> LayerScores:
    """``scores`` with each layer's parameter elements and the model's (for budgets in parameters)."""
    sizes, total = counts
    return LayerScores(dict(scores), scores.method, scores.config, scores.images, scores.skipped,
                       {name: sizes[name] for name in scores}, total, scores.per_image, scores.groups,
                       scores.errors, scores.input_gaps, scores.sources)  # fmt: skip


@dataclass(frozen=True)
class _Inputs:
    """How the loader's tensors enter the model: on its device, floating tensors in its floating dtype."""

    device: torch.device
    dtype: Optional[torch.dtype]
    floating_only: bool  # a path method interpolates its inputs: integer inputs cannot be on a path
    normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None

    @classmethod
    def of(cls, model: nn.Module, settings: RankSettings) -> _Inputs:
        tensors = [*model.parameters(), *model.buffers()]
        floating = next((t.dtype for t in tensors if t.is_floating_point()), None)
        return cls(input_device(model), floating, settings.method_record.uses_path, settings.normalization())

    def prepare(self, x: Tensor, what: str) -> Tensor:
        """A batch's input: on the model's device, in its floating dtype, normalised (``normalize``)."""
        if not x.is_floating_point():
            if self.floating_only:
                raise TypeError(f"{what} is {x.dtype}; a path moves inputs between a baseline and the input, so "
                                "they must be floating point: scale images first (x / 255 for uint8); for "
                                "token ids, rank on the embeddings (input_name=\"inputs_embeds\" with "
                                "embedded tokens, as the models page shows)")  # fmt: skip
            return x.to(self.device)
        x = x.to(device=self.device, dtype=self.dtype or x.dtype)
        if self.normalization is None:
            return x
        mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype) for v in self.normalization)
        if x.dim() < 2 or x.shape[1] != len(mean):
            raise ValueError(f"normalize gives {len(mean)} channel(s) (means {self.normalization[0]}, standard "
                             f"deviations {self.normalization[1]}), {what} has shape {tuple(x.shape)} (channels "
                             "at dimension 1): give one mean and one standard deviation per channel (--normalize "
                             "takes the C means, then the C standard deviations)")  # fmt: skip
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return (x - mean.reshape(shape)) / std.reshape(shape)

    def prepare_truth(self, y: Tensor) -> Tensor:
        """A batch's ground truth: on the model's device, in its floating dtype; never normalised."""
        return y.to(self.device) if not y.is_floating_point() else y.to(device=self.device, dtype=self.dtype or y.dtype)


@dataclass
class _Scoring:
    """What a ranking needs once the layers are known: the batches still to walk, the sums and the checkpoint."""

    settings: RankSettings
    batches: Iterable[Any]
    config: Dict[str, Any]
    skipped: Dict[str, str]
    total: ScoreSum
    record: Optional[Checkpoint]
    done: Progress
    score: Scorer
    inputs: _Inputs
    keywords: BatchKeywords
    listed: Optional[Sequence[Any]] = None  # the batches when they are a list or tuple (the bar's total is exact)
    dataset_size: Optional[int] = None  # a DataLoader's dataset length (the bar's total without per-group limits)

    def run(self, group: Group, shard: Shard, progress: bool, selection: Selection,
            analysed: Optional[Counter] = None) -> None:  # fmt: skip
        """Score this process's share of the batches that ``selection`` picks, checkpointing after each; the error
        protocol of ``shard``. ``analysed``: fingerprints of the images analysed so far, updated (see
        ``_pending``)."""
        cursor = StreamCursor(self.done, same_batches=shard.world > 1)
        steps = f", N={self.settings.n_steps}" if self.settings.method_record.uses_path else ""
        bar = tqdm(disable=not progress or shard.rank > 0, unit="image", desc=f"rank_layers[{self.settings.method}"
                   f"{steps}]", total=self._images_to_walk(group, selection), leave=False)  # fmt: skip

        walked: List[Selected] = []

        def work(item: Tuple[Selected, List[int], List[int], List[str]]) -> int:
            batch, rows, indices, groups = item
            walked[:] = [batch]
            if shard.lockstep:
                if shard.owns(batch.number):
                    self._score_in_step(shard, batch, rows, indices, groups)
            elif rows:
                self._add(batch, rows, indices, groups, self.score(*self._images(batch, rows), indices))
            if self.record and cursor.position >= self.done.samples:  # not before the checkpoint's images are checked
                self.record.save(self.total, Progress(cursor.position, cursor.digest, batches=cursor.batches))
            bar.update(len(batch.keep))
            return batch.number

        def finish() -> None:
            bar.close()
            if walked and shard.joins_last_round(walked[0].number + 1):  # a sweep in step with the round's owners
                self._score_in_step(shard, walked[0], [], [], [])
            if self.record:
                self.record.save(self.total, Progress(cursor.position, cursor.digest, True, cursor.batches))

        items = _pending(self.batches, group, self.settings, cursor, shard, selection, analysed)
        agreement = planning_passes(agree=shard.agreed_steps_per_pass) if shard.lockstep else nullcontext()
        with agreement:
            shard.run_rounds(items, work, finish)

    def _images(self, batch: Selected, rows: List[int]) -> Tuple[Tensor, Optional[Tensor]]:
        """The input and ground truth of ``rows`` of ``batch``, as the model takes them."""
        x = self.inputs.prepare(batch.x[rows], "the loader's input")
        if self.keywords.given:
            self.keywords.use(batch.raw, rows, batch.x.shape[0], self.inputs.device)
        return x, None if batch.y is None else self.inputs.prepare_truth(batch.y[rows])

    def _add(self, batch: Selected, rows: List[int], indices: List[int], groups: List[str], scores: Any) -> None:
        """Add a scorer's answer for ``rows`` of ``batch`` to the sums."""
        result, source_of = ImageScores.of(scores), dict(zip(batch.keep, batch.sources))
        self.total.update(result.scores, indices, groups, result.errors, result.input_gaps,
                          [source_of[row] for row in rows])  # fmt: skip

    def _score_in_step(self, shard: Shard, batch: Selected, rows: List[int], indices: List[int],
                       groups: List[str]) -> None:  # fmt: skip
        """This process's turn in a lockstep round: every process says whether it has rows to score (with the
        error check); if any has, every process runs one sweep, on ``rows`` or, without rows, on the batch's
        first row with the answer thrown away, so that all run the same passes."""
        error, images = None, None
        try:
            limit = self.settings.internal_batch_size
            if limit is not None and limit < len(rows):
                raise ValueError(f"a sharded model runs every pass in step on all processes, so a pass holds all "
                                 f"the images of a batch: internal_batch_size={limit} is below this batch's "
                                 f"{len(rows)}; give at least the loader's batch size, or leave it out")  # fmt: skip
            images = self._images(batch, rows or [0])
        except Exception as failed:  # every process hears of it at the check below
            error = failed
        if shard.check(error, has_work=bool(rows)):
            scores = self.score(*images, indices or [0])
            if rows:
                self._add(batch, rows, indices, groups, scores)

    def _images_to_walk(self, group: Group, selection: Selection) -> Optional[int]:
        """How many images this pass analyses (the progress bar's total): exact for a list or tuple of batches
        (their samples are walked once without the model, as the pass will), a DataLoader's dataset length
        (capped by ``max_images``) without per-group limits, else unknown."""
        if self.listed is not None:
            fresh = Selection(selection.per_group, selection.max_images, selection.earlier, selection.analysed)
            return sum(len(chosen.keep) for chosen in analysed_batches(self.listed, group, fresh, None))
        if self.dataset_size is None or selection.per_group is not None:
            return None
        left = self.dataset_size if selection.max_images is None else min(self.dataset_size, selection.max_images)
        return max(left - selection.analysed, 0)


def _prepare(
    model: nn.Module, batches: Iterable[Any], candidates: Dict[str, nn.Module], settings: RankSettings,
    checkpoint: Optional[PathLike], loss: Optional[Callable], shard: Shard, keywords: BatchKeywords, group: Group,
) -> Union[_Scoring, LayerScores]:  # fmt: skip
    """The layers to score in depth order (one forward pass of the first image), and the scoring set up; the
    scores themselves for the structural methods."""
    listed = batches if isinstance(batches, (list, tuple)) else None
    dataset = getattr(batches, "dataset", None)
    dataset_size = len(dataset) if isinstance(dataset, Sized) and listed is None else None
    first, batches = _peek(batches)
    method = settings.method_record
    inputs = _Inputs.of(model, settings)
    x = batch_pair(first)[0]
    if x.shape[0] == 0:
        raise ValueError(f"the loader's first batch holds no samples (input shape {tuple(x.shape)}); every batch "
                         "must hold at least one")  # fmt: skip
    keyword, call = settings.input_name, keywords.wrap(model) if keywords.given else model

    def run_on(samples: int) -> Callable[[], Any]:
        """One forward pass of ``samples`` rows made of the first batch's first samples, repeated as needed."""
        rows = [i % x.shape[0] for i in range(samples)]
        example = inputs.prepare(x[rows], "the loader's input")
        if keywords.given:
            keywords.use(first, rows, x.shape[0], inputs.device)
        return (lambda: call(**{keyword: example})) if keyword else (lambda: call(example))

    names, skipped = _layers_to_score(model, candidates, run_on, method)
    config = _config(settings, names)
    if not method.needs_loader:
        scores = method.scores_without_data({name: candidates[name] for name in names}, settings.seed)
        return LayerScores(scores, settings.method, config, 0, skipped)
    total = ScoreSum(names)
    record = (Checkpoint.for_process(Path(checkpoint), settings.method, config, shard.rank, shard.world,
                                     _identity(model, settings, loss, keywords, group))
              if checkpoint is not None else None)  # fmt: skip
    done = record.load(total) if record else Progress()
    score = method.scorer(_context(settings, model, [candidates[n] for n in names], names, loss, keywords))
    return _Scoring(
        settings, batches, config, skipped, total, record, done, score, inputs, keywords, listed, dataset_size
    )


def _pending(
    batches: Iterable[Any], group: Group, settings: RankSettings, cursor: StreamCursor, shard: Shard,
    selection: Selection, analysed: Optional[Counter] = None,
) -> Iterator[Tuple[Selected, List[int], List[int], List[str]]]:  # fmt: skip
    """Per batch: the batch, its rows this process still has to score, their indices among the analysed
    images and their group labels.

    Rows scored before the checkpoint are left out, and so are batches of other processes; the cursor checks
    that the checkpoint's samples are the same images. With ``analysed`` (a later pass over the same loader),
    the samples that earlier passes analysed must come again: their fingerprints are checked against it, and
    those of the newly analysed ones added.
    """
    earlier, revisited = Counter(analysed or ()), Counter()
    needs_truth = settings.method_record.needs_ground_truth or settings.target == "label"
    need_target = settings.method if needs_truth else None
    for batch in analysed_batches(batches, group, selection, need_target):
        already = cursor.advance(batch.x)
        mine = shard.owns(batch.number)
        todo = [(row, index, label) for row, index, label in zip(batch.keep, batch.indices, batch.groups)
                if row >= already and mine]  # fmt: skip
        if analysed is not None:
            revisited.update(fingerprint("", batch.x[row]) for row in batch.revisited)
            analysed.update(fingerprint("", batch.x[row]) for row in batch.keep)
        yield batch, [t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo]
    if not selection.done:
        cursor.finish()
    if analysed is not None and (revisited - earlier or (not selection.done and revisited != earlier)):
        raise ValueError("the loader yields other images on another pass (a DataLoader with shuffle=True, or "
                         "random degradations?); until_stable reads it once per pass and needs the same images in "
                         "the same order each time: pass shuffle=False and fixed seeds")  # fmt: skip


def _in_registration_order(settings: RankSettings, layers: Dict[str, nn.Module]) -> LayerScores:
    """A method that needs no images, without a loader: the layers in the order the model registers them."""
    method = settings.method_record
    if method.order is not None and not method.random_draw:
        warnings.warn(f"method={settings.method!r} without a loader orders the layers as they are registered, not "
                      "as they run; pass a loader to order them by depth", UserWarning, stacklevel=3)  # fmt: skip
    scores = method.scores_without_data(layers, settings.seed)
    return LayerScores(scores, settings.method, _config(settings, list(layers)))


def _identity(model: nn.Module, settings: RankSettings, loss: Optional[Callable], keywords: BatchKeywords,
              group: Group) -> Dict[str, Any]:  # fmt: skip
    """What a checkpoint must match besides the settings: a digest of the weights, the identity of each
    function given (``target``, ``output``, ``loss``, ``group``) that its name alone does not tell apart, and the
    batch key that groups the images."""
    weights = hashlib.sha256(repr(sorted(model_digest(model).items())).encode()).hexdigest()
    given = {"target": settings.target, "output": settings.output, "loss": loss, "group": group}
    functions = {name: callable_identity(value) for name, value in given.items() if callable(value)}
    extra = {} if not keywords.given else {"forward_kwargs": keywords.identity()}
    key = {"group": group} if isinstance(group, str) else {}
    return {"weights_sha256": weights, **functions, **extra, **key}


def _config(settings: RankSettings, names: List[str]) -> Dict[str, Any]:
    return {**settings.to_config(), "layers": names}


def _nonempty(loader: Any, method: str) -> Iterable[Any]:
    if loader is None:
        raise ValueError(f"method={method!r} needs a loader of images")
    if isinstance(loader, Tensor):
        return [loader]
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader must be an iterable of batches, got {type(loader).__name__}")
    return loader


def _peek(batches: Iterable[Any]) -> Tuple[Any, Iterator[Any]]:
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("the loader yielded no images to rank") from None
    return first, chain([first], iterator)


@contextmanager
def _on_device(model: nn.Module, device: Optional[torch.device]) -> Iterator[torch.device]:
    """The model on ``device`` inside (moved back on exit); yields the device it runs on."""
    original = next(model.parameters(), torch.empty(0)).device
    try:
        if device is not None:
            model.to(device)
        yield next(model.parameters(), torch.empty(0)).device
    finally:
        if device is not None:
            model.to(original)


def _layers_to_score(
    model: nn.Module, candidates: Dict[str, nn.Module], run_on: Callable[[int], Callable[[], Any]], method: Method
) -> Tuple[List[str], Dict[str, str]]:
    """Candidates in execution order, and those to skip (name → why), from forward passes of two samples and,
    for a path method, of three (``run_on(samples)`` makes one): a layer follows the batch when its output has
    as many rows per sample in both."""
    first = run_on(2)  # the input is checked here, before the model sees it
    try:
        ran = execution_order(model, first)
    except (RuntimeError, TypeError) as error:  # raised by the model's own forward: one line naming the cause
        cause = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"the model's forward pass fails on the loader's first batch: {type(error).__name__}: "
                         f"{cause}") from error  # fmt: skip
    skipped = {name: "did not run in a forward pass" for name in candidates if name not in ran.calls}
    if method.uses_path:
        skipped.update({name: f"runs {ran.calls[name]} times in one forward pass; attribution to a module shared "
                              "between calls is not defined"
                        for name in candidates if ran.calls.get(name, 0) > 1})  # fmt: skip
        three = execution_order(model, run_on(3)).rows
        skipped.update({name: f"its output does not follow the batch (forward passes of 2 and 3 samples gave it "
                              f"{ran.rows[name]} and {three.get(name)} rows): it is the same for every sample (a "
                              "position embedding, say), so it carries nothing of the input"
                        for name in candidates if name in ran.rows and name not in skipped and
                        (ran.rows[name] % 2 or ran.rows[name] < 2 or three.get(name) != ran.rows[name] // 2 * 3)}
                       )  # fmt: skip
    names = [name for name in ran.sort(candidates) if name not in skipped]
    if skipped:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        warnings.warn(f"rank_layers skips {len(skipped)} layer(s): {reasons}", stacklevel=3)
    if not names:
        raise ValueError("no candidate layer can be scored: " + "; ".join(f"{n}: {w}" for n, w in skipped.items()))
    return names, skipped


def _context(settings: RankSettings, model: nn.Module, modules: List[nn.Module], names: List[str],
             loss: Optional[Callable], keywords: BatchKeywords) -> ScoringContext:  # fmt: skip
    """What the method's scorer is built from: the target applied to the model (with the batch's keyword
    arguments), the layers, the path."""
    target, output, keyword = settings.target, settings.output, settings.input_name
    called = keywords.wrap(model) if keywords.given else model
    outputs = ReducedModel(called, None, "output", output, keyword)
    if target == "label":  # each image's class, from its batch: the scorer sets it
        forward, index = outputs, None
    elif isinstance(target, str):
        forward, index = ReducedModel(called, NAMED_TARGETS[target], target, output, keyword), None
    elif callable(target):
        forward, index = ReducedModel(called, target, settings.target_name, output, keyword), None
    else:  # a Captum class index for classifiers
        forward, index = outputs, target
    loss = loss or (lambda out, truth: (out - truth).abs().mean())
    return ScoringContext(settings, model, outputs, forward, index, modules, names, settings.integration_path(), loss)


def select_top_k(
    model: nn.Module,
    loader: Optional[Iterable[Any]] = None,
    k: Union[int, float] = 0.1,
    budget: str = "layers",
    strategy: str = "greedy",
    ties: Optional[str] = None,
    **rank_kwargs: Any,
) -> List[str]:
    """Names of the best layers within the budget ``k``, best first (RAM: k = 0.1 of the candidates).

    ``budget="layers"``: ``k`` in (0, 1] is a fraction of the candidate layers rounded up (at least one), an
    int a count. ``budget="parameters"``: ``k`` is a fraction of the model's parameters (or a number
    of them), filled by ``strategy`` as [`LayerScores.top_k()`][macattr.scores.LayerScores.top_k] says, with
    tied layers taken together and counted once or each on its own (``ties``, as there). ``rank_kwargs`` go to
    [`rank_layers()`][macattr.ranking.rank_layers]; ``k`` is checked before the ranking runs.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> top = select_top_k(model, [torch.rand(1, 3, 8, 8)], k=0.5, n_steps=8, seed=0, progress=False)
        >>> len(top), top[0] in ("0", "2")
        (1, True)
        >>> select_top_k(model, [torch.rand(1, 3, 8, 8)], k=0.5, budget="parameters", n_steps=8, progress=False)
        ['2']
    """
    if budget not in ("layers", "parameters"):
        raise ValueError(f"budget must be 'layers' or 'parameters', got {budget!r}")
    check_strategy(strategy)
    if ties not in (None, "together", "apart"):
        raise ValueError(f"ties must be None, 'together' or 'apart', got {ties!r}")
    count = len(candidate_layers(model, rank_kwargs.get("layers"), rank_kwargs.get("exclude")))
    if budget == "layers":
        resolve_k(k, count)
    else:
        check_k(k)
    return rank_layers(model, loader, **rank_kwargs).top_k(k, budget, strategy=strategy, ties=ties)
