"""The ``macattr`` command: ``demo``, ``rank``, ``plot`` and ``compare``.

Every user error (a missing or unreadable file, a bad module path, a model
factory that raises, an empty image folder, k out of range, a file another run
is using, ...) prints one line ``macattr: error: ...`` and exits with status 2,
before any long work starts where it can be checked up front. An error that is
not one of macattr's checks of your input (raised in your model's code, in
torch, or a bug) keeps its traceback and exits with status 1; ``--debug`` shows
the traceback of every error. Ctrl-C exits with status 130 and says where the
checkpoint is; a closed output pipe (``macattr rank ... | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import math
import os
import re
import sys
import traceback
import warnings
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from macattr import __version__
from macattr.accumulators import STEP_RULES
from macattr.confidence import Confidence
from macattr.files import FileInUse, WriteFailed, exclusive, output_file, write_atomic
from macattr.layers import candidate_layers
from macattr.paths import BlurPath, IntegrationPath, LinearPath, MaskAttributionPath
from macattr.plots import COMPARE_KINDS, KINDS
from macattr.ranking import rank_layers
from macattr.ranking.distributed import RankFailed, finish, init_from_environment, is_main_process
from macattr.ranking.methods import get_method, methods
from macattr.ranking.methods import names as method_names
from macattr.ranking.settings import NORMALIZATIONS, RankSettings, UntilStable
from macattr.ranking.step_check import check_steps
from macattr.restoration.data import degraded_batches
from macattr.restoration.degradations import STAND_IN_TASKS, parse_task
from macattr.restoration.images import center_crop, image_files, read_image
from macattr.restoration.ram_files import write_ram_files
from macattr.scores import LayerScores, agreement, check_k, resolve_k
from macattr.seeds import derive_seed
from macattr.selection import STRATEGIES
from macattr.targets import NAMED_TARGETS
from macattr.weights import load_weights

FIGURE_FORMATS = ("png", "svg", "pdf")


class _CommandError(Exception):
    """A user error the command reports in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors in the command's one-line form."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"macattr: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _positive_int(text: str) -> int:
    """ "3" → 3; refuses 0, negatives and non-integers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """ "1e4" → 10000.0, "inf" → inf; refuses 0, negatives and NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    """ "0.95" → 0.95, a probability in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a probability in (0, 1), got {text!r}")
    return value


def _parse_k(text: str) -> Union[int, float]:
    """ "0.1" → 0.1 (a fraction in (0, 1]), "3" → 3 (a count >= 1)."""
    try:
        return check_k(int(text) if text.strip().lstrip("+-").isdigit() else float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a fraction in (0, 1] or a count >= 1, got {text!r}") from None


def _parse_normalize(text: str) -> Union[str, Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """ "imagenet", or 2C numbers "m1,...,mC,s1,...,sC" → (means, standard deviations)."""
    if text in NORMALIZATIONS:
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or len(values) % 2 or min(values[len(values) // 2 :]) <= 0:
        raise argparse.ArgumentTypeError(f"must be {', '.join(NORMALIZATIONS)} or the means then the standard "
                                         f"deviations (all > 0), one per channel each, got {text!r}")  # fmt: skip
    half = len(values) // 2
    return tuple(values[:half]), tuple(values[half:])


def _parse_tasks(text: str) -> List[str]:
    """ "noise:25,blur:2,jpeg:50" (or "noise25,blur2,jpeg50") → ["noise25", "blur2", "jpeg50"]."""
    tasks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        task = item.replace(":", "")
        if task not in STAND_IN_TASKS:
            try:
                kind, level = parse_task(task)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"degradation must look like noise:25, blur:2 or jpeg:50, got {item!r}"
                ) from None
            task = f"{kind}{level:g}"
        tasks.append(task)
    return tasks


def _parse_target(text: str) -> Union[str, int, Tuple[int, ...]]:
    """A target name, ``label`` (each sample's own, from the loader's (input, label) batches), a class index
    for classifiers ("207") or an index tuple into each sample's output ("15,5": position 15, token 5).

    Examples:
        >>> _parse_target("sum"), _parse_target("207"), _parse_target("15,5")
        ('sum', 207, (15, 5))
    """
    if text in NAMED_TARGETS or text == "label":
        return text
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"target must be one of {sorted(NAMED_TARGETS)}, label, a class index or indices such as 15,5; got {text!r}"
        ) from None
    if min(indices) < 0:
        raise argparse.ArgumentTypeError(f"a class index must be >= 0 (and every index of a tuple), got {text!r}")
    return indices[0] if len(indices) == 1 else indices


def _import_factory_module(target: str, option: str):
    """A module by dotted name (the current folder on the import path, as for ``python -m``) or by file path."""
    if target.endswith(".py") or "/" in target or os.sep in target:
        file = Path(target)
        if not file.is_file():
            raise _CommandError(f"{option} names the file {file}, which does not exist")
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
        raise _CommandError(f"{option} must look like package.module:name or path/to/file.py:name, got {spec!r}")
    try:
        module = _import_factory_module(target, option)
    except _CommandError:
        raise
    except Exception as error:  # the user's module may raise anything while it is imported
        raise _CommandError(f"cannot import {target!r} for {option}: {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise _CommandError(f"{target!r} has no callable {attribute!r} for {option}")
    return factory


def _call(factory: Callable, spec: str, option: str) -> object:
    try:
        return factory()
    except Exception as error:  # the user's factory may raise anything
        raise _CommandError(f"{option} {spec} raised {type(error).__name__}: {error}") from None


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
    factory = _import_attribute(spec, "--model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _call(factory, spec, "--model")
    if not isinstance(model, torch.nn.Module):
        raise _CommandError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        load_weights(model, weights, key, strict, note=lambda text: print(f"macattr: note: {text}", file=sys.stderr))
    return model.eval()


def load_loader(spec: str) -> Iterable:
    """The batches of ``module:function`` (called with no arguments): any iterable of batches that
    ``rank_layers`` reads (tensors, ``(x, y)`` pairs, dicts with ``"lq"`` or ``"input"``)."""
    loader = _call(_import_attribute(spec, "--loader"), spec, "--loader")
    if isinstance(loader, (str, bytes)) or not isinstance(loader, (Iterable, torch.Tensor)):
        raise _CommandError(f"--loader {spec} returned {type(loader).__name__}, not an iterable of batches")
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


def _demo(args: argparse.Namespace) -> None:
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
        raise _CommandError(f"{given} belong to --path mask, not --path {args.path}")
    if args.blur_sigma is not None and args.path != "blur":
        raise _CommandError("--blur-sigma belongs to --path blur")
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
        raise _CommandError("pass one of --images (a folder of images) or --loader (module:function)")
    if args.loader is not None:
        given = [option for option, value in (("--degrade", args.degrade), ("--size", args.size),
                                               ("--channels", args.channels != 3)) if value]  # fmt: skip
        if given:
            raise _CommandError(f"{', '.join(given)} work on --images; a --loader yields its batches as they are")
        return load_loader(args.loader)
    return _image_batches(args.images, args.size, args.degrade, args.seed, args.channels)


def _rank(args: argparse.Namespace) -> None:
    output_file(args.out, "--out", [".json"])  # every file the run writes is checked before it starts
    if args.checkpoint:
        output_file(args.checkpoint, "--checkpoint")
    if args.ram_files:
        _ram_folder(args.ram_files)
    if get_method(args.method).needs_ground_truth and not (args.degrade or args.loader):
        raise _CommandError(f"--method {args.method} needs ground truth: --degrade (it scores the loss between "
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
        if int(os.environ.get("RANK", "0")) == 0:  # the process that writes the files holds them from the start
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
        device = init_from_environment(args.backend, args.device)  # under torchrun: the group, cuda:LOCAL_RANK
        group = "task" if args.per_task or args.degrade else None
        try:
            if args.check_steps:
                _check_steps(model, batches, settings, args, group, device)
            scores = rank_layers(model, batches, settings=settings, group=group, device=device, exclude=args.exclude,
                                 progress=not args.no_progress, checkpoint=args.checkpoint,
                                 tolerance=args.tolerance, strict=args.strict)  # fmt: skip
        finally:
            main_process = is_main_process()
            finish()
        if main_process:
            _write_ranking(scores, args)


def _check_steps(model: torch.nn.Module, batches: Iterable, settings: RankSettings, args: argparse.Namespace,
                 group: Optional[str], device: Optional[torch.device]) -> None:  # fmt: skip
    """``--check-steps``: the top k at N and at N/2 on the first 4 images, one line on stdout."""
    if not settings.method_record.step_rule:
        raise _CommandError(f"--check-steps compares step sums; --method {settings.method} sums none")
    if is_main_process():
        print(f"check of N: ranking the first 4 images at N = {settings.n_steps} and N = {settings.n_steps // 2} "
              f"({int(1.5 * settings.n_steps) + 2} passes per image) ...", flush=True)  # fmt: skip
    check = check_steps(model, batches, settings, args.k, images=4, warn=False, budget=args.budget,
                        tolerance=args.tolerance, group=group, device=device, exclude=args.exclude)  # fmt: skip
    advice = (
        ""
        if check.enough
        else "; raise --n-steps" + ("" if settings.rule == "trapezoid" else " or use --rule trapezoid")
    )
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
        raise _CommandError(f"--ram-code sets the method, path, step rule and normalisation itself; drop "
                            f"{', '.join(given)}")  # fmt: skip
    return RankSettings.ram_code(args.n_steps, mask.get("mask_ratio", 0.5), mask.get("sharpness", 1e4), args.seed,
                                 target=args.target, samples_per_group=args.per_task,
                                 internal_batch_size=args.internal_batch_size)  # fmt: skip


def _write_ranking(scores: LayerScores, args: argparse.Namespace) -> None:
    """The scores file, RAM's files, and the top k on stdout with the share of parameters they train."""
    top = scores.top_k(args.k, args.budget, strategy=args.strategy)
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
    tied = [unit for unit in scores.units() if len(unit) > 1 and unit[0] in top]
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
    return scores.confidence(args.k, args.budget, seed=args.seed, strategy=args.strategy)


def _plot(args: argparse.Namespace) -> None:
    from macattr.plots import plot_layer_importance

    sets = [LayerScores.load(path) for path in args.scores]
    if args.top_k is not None:
        resolve_k(args.top_k, min(len(s) for s in sets))
    figure = plot_layer_importance(sets if len(sets) > 1 else sets[0], kind=args.kind, top_k=args.top_k, log=args.log)
    _save_figure(figure, args.out, args.dpi)


def _regex(text: str) -> re.Pattern[str]:
    """A regular expression of layer names (``--exclude``)."""
    try:
        return re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a regular expression ({error}): {text!r}") from None


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
        raise _CommandError(f"--ram-files {folder} is a file; name a folder (the three RAM files go in it)")
    output_file(path / "filter_name.txt", "--ram-files")


def _save_figure(figure, out: str, dpi: int) -> None:
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise _CommandError(f"--out must end in one of {', '.join('.' + f for f in FIGURE_FORMATS)}, got {out!r}")
    write_atomic(out, lambda tmp: figure.savefig(tmp, dpi=dpi, format=suffix))
    print(f"wrote {out}")


def _compare(args: argparse.Namespace) -> None:
    from macattr.plots import check_common, plot_comparison

    if len(args.scores) < 2:
        raise _CommandError("compare needs two or more scores files")
    sets = [LayerScores.load(path) for path in args.scores]
    if not args.allow_partial:
        check_common(sets, args.scores)
    result = agreement(sets, args.top_k, labels=args.scores)
    print(result.table())
    figure = plot_comparison(sets, kind=args.kind, top_k=args.top_k, labels=[Path(p).stem for p in args.scores],
                             allow_partial=True)  # fmt: skip
    _save_figure(figure, args.out, args.dpi)


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser: sub-commands ``demo``, ``rank``, ``plot`` and ``compare``.

    Examples:
        >>> build_parser().parse_args(["plot", "scores.json", "--kind", "bar"]).kind
        'bar'
    """
    parser = _Parser(prog="macattr", description="Rank network layers by Mask Attribute Conductance.")
    parser.add_argument("--version", action="version", version=f"macattr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the subcommand too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of any error")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser(
        "demo", parents=[debug], help="the embedded default: a small restoration network on bundled photos"
    )
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--k", type=_parse_k, default=0.1, help="fraction in (0, 1] or count of layers (default 0.1)")
    demo.add_argument("--n-steps", type=_positive_int, default=200, help="grid intervals N (default 200)")
    demo.add_argument("--pretrain-steps", type=_positive_int, default=300, help="mask pre-training steps (default 300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    rank = commands.add_parser(
        "rank", parents=[debug], help="rank the layers of your model over a folder of images or a loader"
    )
    rank.add_argument("--model", required=True, help="package.module:factory or path/to/file.py:factory")
    rank.add_argument("--weights", help="state dict file, loaded with torch.load(weights_only=True)")
    rank.add_argument("--weights-key", help="the key of the state dict in the file (BasicSR: params, params_ema; "
                      "default: params when both are there, with a note)")  # fmt: skip
    rank.add_argument("--non-strict", action="store_true",
                      help="load the tensors that fit and list the ones left out, instead of refusing the "
                      "file")  # fmt: skip
    rank.add_argument("--images", help="folder of PNG/JPEG/BMP/TIFF images (8 or 16 bits, or floats in [0, 1])")
    rank.add_argument("--channels", type=int, choices=[1, 3], default=3,
                      help="read --images as 3 (RGB, default) or 1 (grey) channels")  # fmt: skip
    rank.add_argument("--loader", help="package.module:function returning an iterable of batches (any model)")
    rank.add_argument("--out", default="scores.json", help="scores file (default scores.json)")
    rank.add_argument("--method", choices=method_names(aliases=True), default="mac",
                      help="; ".join(f"{m.name}: {m.summary}" for m in methods()))  # fmt: skip
    rank.add_argument("--k", type=_parse_k, default=0.1, help="fraction in (0, 1] or count (default 0.1)")
    rank.add_argument("--budget", choices=["layers", "parameters"], default="layers",
                      help="what --k counts: layers (RAM's rule) or the model's trainable parameters")  # fmt: skip
    rank.add_argument("--strategy", choices=list(STRATEGIES), default="greedy",
                      help="how the top k fills the budget: greedy (down the ranking, default), per_parameter "
                      "(by score per parameter), knapsack (the largest summed score that fits --budget "
                      "parameters), blocks (whole blocks by their summed score)")  # fmt: skip
    rank.add_argument("--degrade", type=_parse_tasks, default=[], help="e.g. noise:25,blur:2,jpeg:50")
    rank.add_argument("--per-task", type=_positive_int, help="images per degradation (RAM: 10)")
    rank.add_argument("--size", type=_positive_int, help="centre-crop images to this size")
    rank.add_argument("--target", type=_parse_target, default="gradient_magnitude",
                      help=f"one of {', '.join(NAMED_TARGETS)}; label (each sample's own, from (input, label) "
                      "batches); a class index for classifiers; or indices into each sample's output, such as "
                      "15,5")  # fmt: skip
    rank.add_argument("--n-steps", type=_positive_int, default=200)
    rank.add_argument("--ram-code", action="store_true",
                      help="MAC as the RAM authors' code computes it: their grid (stops at 1 - r/N), the right rule, "
                      "numpy's pixel order, ImageNet normalisation, k rounded down")  # fmt: skip
    rank.add_argument("--rule", choices=list(STEP_RULES), default="left",
                      help="conductance's step rule: left (the paper's Eq. 9), right (the RAM code), "
                      "trapezoid")  # fmt: skip
    rank.add_argument("--path", choices=["mask", "linear", "blur"],
                      help="the path of mac, conductance or internal_influence (default: the method's own, the mask "
                      "path for mac, the linear path for the others)")  # fmt: skip
    rank.add_argument("--mask-ratio", type=_positive_float, help="r of the mask path (default 0.5)")
    rank.add_argument("--sharpness", type=_positive_float, help="δ of the mask path (default 1e4; 'inf': hard)")
    rank.add_argument("--patch-size", type=_positive_int, help="cell size of the mask path (default 1)")
    rank.add_argument("--mask-dims", choices=["image", "sequence", "volume"],
                      help="what the mask path masks cell by cell: image (N, C, H, W) pixels (default), sequence "
                      "(N, T, D) tokens, volume (N, C, D, H, W) voxels")  # fmt: skip
    rank.add_argument("--ramp", action="store_true", default=None,
                      help="reveal each masked cell linearly, one after another, instead of the sigmoid: step sums "
                      "converge once N has several steps per masked cell (tokens, patches)")  # fmt: skip
    rank.add_argument("--exclude", type=_regex, metavar="REGEX",
                      help="leave out the candidate layers whose names match this regular expression (a position "
                      "embedding, a layer that sees no input)")  # fmt: skip
    rank.add_argument("--blur-sigma", type=_positive_float, help="σ of --path blur at its start (default 4)")
    rank.add_argument("--baseline", type=float, default=0.0, help="the baseline x' of the path (default 0)")
    rank.add_argument("--normalize", type=_parse_normalize,
                      help="normalise the images per channel before the path: imagenet, or the means then the standard "
                      "deviations, e.g. 0.5,0.5,0.5,0.25,0.25,0.25 (the baseline stays 0 in that space)")  # fmt: skip
    rank.add_argument("--seed", type=int, default=0)
    rank.add_argument("--device", help="cpu, cuda, cuda:1, ... (under torchrun on GPUs: cuda:LOCAL_RANK)")
    rank.add_argument("--backend", choices=["nccl", "gloo"], help="under torchrun (default: NCCL on CUDA, Gloo on CPU)")
    rank.add_argument("--internal-batch-size", type=_positive_int)
    rank.add_argument("--until-stable", type=_probability, metavar="P",
                      help="add images (per task, in passes) until the bootstrap probability that the top k stays "
                      "the same reaches P, e.g. 0.95; every image otherwise")  # fmt: skip
    rank.add_argument(
        "--check-steps",
        action="store_true",
        help="first compare the top k at N and N/2 on 4 images, and say whether N is large enough",
    )
    rank.add_argument("--tolerance", type=_probability, default=0.1,
                      help="relative error the scores must be within: warn (or with --strict refuse) when a "
                      "layer's estimated error or an image's completeness gap is over it (default 0.1)")  # fmt: skip
    rank.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2, no files) a ranking whose estimated error is over --tolerance",
    )
    rank.add_argument("--checkpoint", help="resume file, updated after every image")
    rank.add_argument("--ram-files", help="also write RAM's filter_*.txt into this folder")
    rank.add_argument("--no-progress", action="store_true")
    rank.set_defaults(run=_rank)

    plot = commands.add_parser(
        "plot", parents=[debug], help="depth profile, heatmap or bar chart of one or more scores files"
    )
    plot.add_argument("scores", nargs="+", help="scores.json written by rank or demo (several: one profile)")
    plot.add_argument("--out", default="heatmap.png", help="PNG, SVG or PDF, by extension")
    plot.add_argument("--kind", choices=list(KINDS), default="heatmap")
    plot.add_argument("--top-k", type=_parse_k, default=0.1, help="mark these layers (default 0.1)")
    plot.add_argument("--log", action=argparse.BooleanOptionalAction, default=None, help="log colour scale")
    plot.add_argument("--dpi", type=_positive_int, default=120)
    plot.set_defaults(run=_plot)

    compare = commands.add_parser(
        "compare", parents=[debug], help="two or more scores files: their figures and rank agreement"
    )
    compare.add_argument("scores", nargs="+", help="two or more scores files of the same model")
    compare.add_argument("--out", default="comparison.png", help="PNG, SVG or PDF, by extension")
    compare.add_argument("--kind", choices=list(COMPARE_KINDS), default="heatmap")
    compare.add_argument("--top-k", type=_parse_k, default=0.1)
    compare.add_argument("--allow-partial", action="store_true", help="compare files sharing under half their layers")
    compare.add_argument("--dpi", type=_positive_int, default=120)
    compare.set_defaults(run=_compare)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); returns the exit status.

    Examples:
        >>> main(["plot", "no/such/scores.json"])  # prints "macattr: error: scores file ... does not exist"
        2
    """
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        with warnings.catch_warnings():  # the library's warnings as the command's own lines, without source code
            if not args.debug:
                warnings.showwarning = _show_warning
            run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except KeyboardInterrupt:
        where = getattr(args, "checkpoint", None)
        hint = f"; rerun the same command to resume from the checkpoint {where}" if where else ""
        print(f"macattr: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout has gone (| head): nothing more to say, and no one to say it to
        _silence_stdout()
        return 141
    except WriteFailed as error:  # a full disk, a folder without permission: the file and the cause
        print(f"macattr: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        status = _status_of(error)
        if args.debug or status == 1 and not isinstance(error, RankFailed):
            traceback.print_exception(error, file=sys.stderr)
        if status == 2 or isinstance(error, RankFailed):
            print(f"macattr: error: {error}", file=sys.stderr)
        return status
    return 0


def _show_warning(message: Warning, category: type, filename: str, lineno: int, file: object = None,
                  line: Optional[str] = None) -> None:  # fmt: skip
    """A warning on stderr as one ``macattr: warning: ...`` line (``--debug`` shows Python's own form)."""
    print(f"macattr: warning: {message}", file=sys.stderr)


def _status_of(error: Exception) -> int:
    """2 for an error in the user's input that macattr names (its own checks and the command's), 1 otherwise."""
    if isinstance(error, (_CommandError, FileInUse)):
        return 2
    if isinstance(error, (ValueError, TypeError, ImportError)) and _raised_by_macattr(error):
        return 2
    return 1


def _raised_by_macattr(error: BaseException) -> bool:
    """Whether ``error`` was raised by macattr's own code (its checks), not by torch, the user's model or a
    library it calls."""
    frames = traceback.extract_tb(error.__traceback__)
    package = Path(__file__).resolve().parent
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(package)


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush finds no broken pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a file (redirected in-process)
        pass


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "build_parser",
    "load_loader",
    "load_model",
    "main",
]
