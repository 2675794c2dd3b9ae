"""What the ``macattr`` command's sub-commands do (``demo``, ``rank``, ``plot``, ``compare``), once
[`macattr.cli`][macattr.cli] has parsed their arguments: it imports this module only then, so that ``--help``
and ``--version`` load no torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from macattr.confidence import Confidence
from macattr.engine import planning_passes
from macattr.files import exclusive, output_file, write_atomic
from macattr.layers import candidate_layers
from macattr.memory import PassMemory
from macattr.paths import BlurPath, IntegrationPath, LinearPath, MaskAttributionPath
from macattr.placement import is_sharded
from macattr.ranking import rank_layers
from macattr.ranking.distributed import finish, init_from_environment, is_main_process, leave_together
from macattr.ranking.methods import get_method
from macattr.ranking.settings import RankSettings, UntilStable
from macattr.ranking.step_check import check_steps
from macattr.restoration.data import degraded_batches
from macattr.restoration.images import center_crop, image_files, read_image
from macattr.restoration.ram_files import write_ram_files
from macattr.scores import LayerScores, agreement, resolve_k
from macattr.seeds import derive_seed
from macattr.segments import points_per_image, remedy
from macattr.weights import load_weights

FIGURE_FORMATS = ("png", "svg", "pdf")


class CommandError(Exception):
    """A user error the command reports in one line."""


def _import_factory_module(target: str, option: str):
    """A module by dotted name (the current folder on the import path, as for ``python -m``) or by file path."""
    if target.endswith(".py") or "/" in target or os.sep in target:
        file = Path(target)
        if not file.is_file():
            raise CommandError(f"{option} names the file {file}, which does not exist")
        sys.path.insert(0, str(file.resolve().parent))  # so that the file's own imports of its neighbours work
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(target)


def _import_attribute(spec: str, option: str) -> Callable:
    """The callable ``module:name`` or ``path/to/file.py:name`` that ``option`` names."""
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise CommandError(f"{option} must look like package.module:name or path/to/file.py:name, got {spec!r}")
    try:
        module = _import_factory_module(target, option)
    except CommandError:
        raise
    except Exception as error:  # the user's module may raise anything while it is imported
        raise CommandError(f"cannot import {target!r} for {option}: {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"{target!r} has no callable {attribute!r} for {option}")
    return factory


def _call(factory: Callable, spec: str, option: str) -> object:
    try:
        return factory()
    except Exception as error:  # the user's factory may raise anything
        raise CommandError(f"{option} {spec} raised {type(error).__name__}: {error}") from None


def load_model(spec: str, weights: Optional[str], seed: int = 0, key: Optional[str] = None,
               strict: bool = True) -> torch.nn.Module:  # fmt: skip
    """Build ``module:factory`` or ``path/to/file.py:factory`` (a class or function with no required
    arguments) under ``torch.manual_seed(seed)``, load ``weights`` into it, and put it in eval mode.

    The seed makes a factory without weights build the same model in every process of a group and in every
    run; torch's global generator is put back afterwards.

    Examples:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "nets.py"), "w") as file:
        ...     _ = file.write("from torch import nn\\ndef build():\\n    return nn.Conv2d(3, 3, 1)\\n")
        >>> load_model(os.path.join(folder, "nets.py") + ":build", weights=None)
        Conv2d(3, 3, kernel_size=(1, 1), stride=(1, 1))
    """
    if weights is None and (key is not None or not strict):
        given = "--weights-key" if key is not None else "--non-strict"
        raise CommandError(f"{given} says how to read a weights file, and no --weights names one")
    factory = _import_attribute(spec, "--model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _call(factory, spec, "--model")
    if not isinstance(model, torch.nn.Module):
        raise CommandError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None and is_sharded(model):
        raise CommandError(f"--model {spec} returned a sharded model (fully_shard), and --weights loads whole "
                           "tensors into an unsharded one: load the weights in the factory before it shards the "
                           "model, and leave out --weights")  # fmt: skip
    if weights is not None:
        load_weights(model, weights, key, strict, note=lambda text: print(f"macattr: note: {text}", file=sys.stderr))
    return model.eval()


def load_loader(spec: str) -> Iterable:
    """The batches of ``module:function`` (called with no arguments): any iterable of batches that
    ``rank_layers`` reads (tensors, ``(x, y)`` pairs, dicts with ``"lq"`` or ``"input"``)."""
    loader = _call(_import_attribute(spec, "--loader"), spec, "--loader")
    if isinstance(loader, (str, bytes)) or not isinstance(loader, (Iterable, torch.Tensor)):
        raise CommandError(f"--loader {spec} returned {type(loader).__name__}, not an iterable of batches")
    return loader


def _image_batches(folder: str, size: Optional[int], tasks: Sequence[str], seed: int, channels: int = 3) -> list:
    """One batch per image and task, ``{"lq", "gt", "task"}``; clean images (task "clean") without tasks."""
    batches = []
    for index, file in enumerate(image_files(folder)):
        clean = read_image(file, channels)
        clean = (center_crop(clean, size) if size else clean)[None]
        if tasks:
            batches += degraded_batches(clean, tasks, seed=derive_seed(seed, "image", index), sources=[file.name])
        else:
            batches.append({"lq": clean, "gt": clean, "task": ["clean"], "source": [file.name]})
    return batches


def demo(args: argparse.Namespace) -> None:
    from macattr.restoration.demo import run_demo

    run_demo(args.out, k=args.k, n_steps=args.n_steps, pretrain_steps=args.pretrain_steps, seed=args.seed,
             progress=not args.no_progress)  # fmt: skip


_MASK_OPTIONS = {
    "mask_ratio": "--mask-ratio",
    "sharpness": "--sharpness",
    "patch_size": "--patch-size",
    "mask_dims": "--mask-dims",
    "ramp": "--ramp",
}


def _path(args: argparse.Namespace) -> Tuple[Optional[IntegrationPath], Dict[str, object]]:
    """``--path`` and its options: (the path, or None for the method's own; the mask options for the settings)."""
    mask = {name: getattr(args, name) for name in _MASK_OPTIONS if getattr(args, name) is not None}
    if args.path in ("linear", "blur") and mask:
        given = ", ".join(_MASK_OPTIONS[name] for name in mask)
        raise CommandError(f"{given} belong to --path mask, not --path {args.path}")
    if args.blur_sigma is not None and args.path != "blur":
        raise CommandError("--blur-sigma belongs to --path blur")
    if args.path == "mask":
        return MaskAttributionPath(**mask), {}
    if args.path == "linear":
        return LinearPath(), {}
    if args.path == "blur":
        return BlurPath(4.0 if args.blur_sigma is None else args.blur_sigma), {}
    return None, mask


def _batches(args: argparse.Namespace) -> Iterable:
    """The analysed batches: the ``--images`` folder (degraded with ``--degrade``) or the ``--loader``'s."""
    if (args.images is None) == (args.loader is None):
        raise CommandError("pass one of --images (a folder of images) or --loader (module:function)")
    if args.loader is not None:
        given = [option for option, value in (("--degrade", args.degrade), ("--size", args.size),
                                               ("--channels", args.channels != 3)) if value]  # fmt: skip
        if given:
            raise CommandError(f"{', '.join(given)} work on --images; a --loader yields its batches as they are")
        return load_loader(args.loader)
    return _image_batches(args.images, args.size, args.degrade, args.seed, args.channels)


def rank(args: argparse.Namespace) -> None:
    output_file(args.out, "--out", [".json"])  # every file the run writes is checked before it starts
    if args.checkpoint:
        output_file(args.checkpoint, "--checkpoint")
        if Path(args.checkpoint).resolve() == Path(args.out).resolve():
            raise CommandError(f"--checkpoint and --out name the same file {args.out}: the checkpoint is the run's "
                               "running sums, the output its scores; pass two paths")  # fmt: skip
    if args.ram_files:
        _ram_folder(args.ram_files)
    if get_method(args.method).needs_ground_truth and not (args.degrade or args.loader):
        raise CommandError(f"--method {args.method} needs ground truth: --degrade (it scores the loss between "
                            "restored degraded images and the clean ones) or a --loader of (input, truth) "
                            "batches")  # fmt: skip
    path, mask = _path(args)
    if args.ram_code:
        settings = _ram_code(args, mask)
    else:
        settings = RankSettings(
            args.method, target=args.target, n_steps=args.n_steps, rule=args.rule, path=path, baselines=args.baseline,
            seed=args.seed, normalize=args.normalize, samples_per_group=args.per_task,
            internal_batch_size=args.internal_batch_size, **mask,
        )  # fmt: skip
    if args.until_stable is not None:
        settings = replace(settings, until_stable=UntilStable(args.until_stable, args.k, args.budget))
    with ExitStack() as held:
        device = init_from_environment(args.backend, args.device)  # under torchrun: the group, cuda:LOCAL_RANK
        held.callback(finish)  # the group exists before the model: a factory may shard it (fully_shard)
        main_process = is_main_process()
        if main_process:  # the process that writes the files holds them from the start
            for folder in {Path(args.out).parent, *([Path(args.ram_files)] if args.ram_files else [])}:
                made = [p for p in (folder, *folder.parents) if not p.exists()]
                held.callback(_remove_if_made_empty, made)  # a failed run leaves no empty folder behind
            held.enter_context(exclusive(args.out, "output file"))
            if args.ram_files:
                held.enter_context(exclusive(Path(args.ram_files) / "filter_name.txt", "RAM files folder"))
        model = load_model(args.model, args.weights, args.seed, args.weights_key, not args.non_strict)
        if args.budget == "layers":
            resolve_k(args.k, len(candidate_layers(model, None, args.exclude)))
        batches = _batches(args)
        group = "task" if args.per_task or args.degrade else None
        if args.check_steps:
            _check_steps(model, batches, settings, args, group, device)
            if iter(batches) is batches:  # a factory's iterator: the check read its first images
                batches = _batches(args)
        with planning_passes(report=_first_pass_memory(main_process and not args.no_progress)):
            scores = rank_layers(model, batches, settings=settings, group=group, device=device,
                                 exclude=args.exclude, progress=not args.no_progress, checkpoint=args.checkpoint,
                                 tolerance=args.tolerance, strict=args.strict)  # fmt: skip
        if main_process:
            _write_ranking(scores, args)
        leave_together()


def _first_pass_memory(tell: bool) -> Callable[[PassMemory, int], None]:
    """What the command says of the memory of a pass (on stderr, with the progress bar), once, when the first
    pass has measured it."""
    told: List[bool] = []

    def report(memory: PassMemory, steps: int) -> None:
        if tell and not told:
            told.append(True)
            from tqdm.auto import tqdm

            tqdm.write(f"macattr: memory: {memory.describe(steps)}", file=sys.stderr)  # above the progress bar

    return report


def _check_steps(model: torch.nn.Module, batches: Iterable, settings: RankSettings, args: argparse.Namespace,
                 group: Optional[str], device: Optional[torch.device]) -> None:  # fmt: skip
    """``--check-steps``: the top k at N and at N/2 on the first 4 images, one line on stdout."""
    if not settings.method_record.step_rule:
        raise CommandError(f"--check-steps compares step sums; --method {settings.method} sums none")
    if settings.n_steps < 2:
        raise CommandError(f"--check-steps compares N with N / 2: --n-steps must be >= 2, got {settings.n_steps}")
    passes = sum(points_per_image(settings.rule, n) for n in (settings.n_steps, settings.n_steps // 2))
    if is_main_process():
        print(f"check of N: ranking the first 4 images at N = {settings.n_steps} and N = {settings.n_steps // 2} "
              f"({passes} passes per image) ...", flush=True)  # fmt: skip
    check = check_steps(model, batches, settings, args.k, images=4, warn=False, budget=args.budget,
                        tolerance=args.tolerance, group=group, device=device, exclude=args.exclude,
                        progress=not args.no_progress)  # fmt: skip
    ramp = bool(getattr(settings.integration_path(), "ramp", False))
    advice = "" if check.enough else "; " + remedy(settings.rule, command=True, ramp=ramp)
    if is_main_process():
        print(f"check of N: {check.summary()}{advice}")


def _ram_code(args: argparse.Namespace, mask: Dict[str, object]) -> RankSettings:
    """``--ram-code``: MAC as the RAM authors' code computes it (``RankSettings.ram_code``)."""
    given = [option for option, value in (("--path", args.path), ("--rule", args.rule != "left"),
                                          ("--normalize", args.normalize), ("--method", args.method != "mac"),
                                          ("--patch-size", "patch_size" in mask),
                                          ("--mask-dims", "mask_dims" in mask),
                                          ("--ramp", "ramp" in mask)) if value]  # fmt: skip
    if given:
        raise CommandError(f"--ram-code sets the method, path, step rule and normalisation itself; drop "
                            f"{', '.join(given)}")  # fmt: skip
    return RankSettings.ram_code(args.n_steps, mask.get("mask_ratio", 0.5), mask.get("sharpness", 1e4), args.seed,
                                 target=args.target, samples_per_group=args.per_task,
                                 internal_batch_size=args.internal_batch_size)  # fmt: skip


def _write_ranking(scores: LayerScores, args: argparse.Namespace) -> None:
    """The scores file, RAM's files, and the top k on stdout with the share of parameters they train."""
    top = scores.top_k(args.k, args.budget, strategy=args.strategy, ties=args.ties)
    sure = _confidence(scores, args)
    scores.save(args.out, sure)
    if args.ram_files:
        write_ram_files(scores, args.ram_files)
    print(f"{scores.method}: {scores.images} images, {len(scores)} layers; top {len(top)} (k={args.k} of the "
          f"{args.budget}), {100 * scores.share(top):.1f} % of the parameters:")  # fmt: skip
    relative = scores.relative_errors() if scores.errors is not None else None
    for rank, name in enumerate(top, start=1):
        error = "" if relative is None else f" ± {100 * relative[name]:.2g} %"
        shown = "" if sure is None else (f"  P(top k) {sure.in_top_k[name]:.2f}, 95 % interval "
                                         f"[{sure.low[name]:.4g}, {sure.high[name]:.4g}]")  # fmt: skip
        print(f"  {rank:2d}. {name}  {scores[name]:.4g}{error}{shown}")
    tied = [unit for unit in scores.units(args.ties) if len(unit) > 1 and unit[0] in top]
    if tied:
        print("tied, selected together and counted once: " + "; ".join(" = ".join(unit) for unit in tied))
    if relative is not None:
        print(f"step sum: {scores.certificate(args.tolerance).summary()}")
    print(sure.summary() if sure is not None else "confidence: not computed (needs 2 images in every group)")
    print(f"wrote {args.out}")


def _confidence(scores: LayerScores, args: argparse.Namespace) -> Optional[Confidence]:
    """The bootstrap's confidence in the top k, or None where the ranking has too few images for one."""
    if not scores.bootstrappable:
        return None
    return scores.confidence(args.k, args.budget, seed=args.seed, strategy=args.strategy, ties=args.ties)


def plot(args: argparse.Namespace) -> None:
    from macattr.plots import plot_layer_importance

    sets = [LayerScores.load(path) for path in args.scores]
    if args.top_k is not None:
        resolve_k(args.top_k, min(len(s) for s in sets))
    figure = plot_layer_importance(sets if len(sets) > 1 else sets[0], kind=args.kind, top_k=args.top_k, log=args.log)
    _save_figure(figure, args.out, args.dpi)


def _remove_if_made_empty(made: List[Path]) -> None:
    """Remove the folders of ``made`` (deepest first: the ones that did not exist before the run) that the run
    left empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (or not there): it and its parents stay
            return


def _ram_folder(folder: str) -> None:
    """``--ram-files``: a folder that exists or can be made, and written."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CommandError(f"--ram-files {folder} is a file; name a folder (the three RAM files go in it)")
    output_file(path / "filter_name.txt", "--ram-files")


def _save_figure(figure, out: str, dpi: int) -> None:
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise CommandError(f"--out must end in one of {', '.join('.' + f for f in FIGURE_FORMATS)}, got {out!r}")
    write_atomic(out, lambda tmp: figure.savefig(tmp, dpi=dpi, format=suffix))
    print(f"wrote {out}")


def compare(args: argparse.Namespace) -> None:
    from macattr.plots import check_common, plot_comparison

    if len(args.scores) < 2:
        raise CommandError("compare needs two or more scores files")
    sets = [LayerScores.load(path) for path in args.scores]
    if not args.allow_partial:
        check_common(sets, args.scores)
    result = agreement(sets, args.top_k, labels=args.scores)
    print(result.table())
    figure = plot_comparison(sets, kind=args.kind, top_k=args.top_k, labels=[Path(p).stem for p in args.scores],
                             allow_partial=True)  # fmt: skip
    _save_figure(figure, args.out, args.dpi)


__all__ = ["CommandError", "compare", "demo", "load_loader", "load_model", "plot", "rank"]
