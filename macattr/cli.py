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
import io
import math
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from macattr import __version__
from macattr.files import FileInUse, WriteFailed
from macattr.vocabulary import (
    BUILT_IN_METHODS,
    COMPARE_KINDS,
    FIGURE_KINDS,
    NORMALIZATIONS,
    RULES,
    STRATEGIES,
    TARGET_NAMES,
)


class _Parser(argparse.ArgumentParser):
    """argparse with errors in the command's one-line form."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"macattr: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _dpi(text: str) -> int:
    """ "300" → 300; refuses what is not an integer in [10, 2400] (a figure of 10 × 4 inches at 2400 dots per inch
    is already 24000 × 9600 pixels)."""
    value = _positive_int(text)
    if not 10 <= value <= 2400:
        raise argparse.ArgumentTypeError(f"must be an integer in [10, 2400], got {text!r}")
    return value


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
        from macattr.scores import check_k

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
    from macattr.restoration.degradations import STAND_IN_TASKS, parse_task

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
    if text in TARGET_NAMES or text == "label":
        return text
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"target must be one of {sorted(TARGET_NAMES)}, label, a class index or indices such as 15,5; got {text!r}"
        ) from None
    if min(indices) < 0:
        raise argparse.ArgumentTypeError(f"a class index must be >= 0 (and every index of a tuple), got {text!r}")
    return indices[0] if len(indices) == 1 else indices


def _regex(text: str) -> re.Pattern[str]:
    """A regular expression of layer names (``--exclude``)."""
    try:
        return re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a regular expression ({error}): {text!r}") from None


class _HelpFormatter(argparse.HelpFormatter):
    """Help with every option's default after its text, where it has one and the text does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS or default == []
        if hidden or "default" in text or not action.option_strings:
            return text
        shown = default.pattern if isinstance(default, re.Pattern) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _methods_help() -> str:
    return "; ".join(f"{entry.name}: {entry.summary}" for entry in BUILT_IN_METHODS.values())


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser: sub-commands ``demo``, ``rank``, ``plot`` and ``compare``. It imports
    nothing heavy: ``--help`` and ``--version`` answer without loading torch.

    Examples:
        >>> build_parser().parse_args(["plot", "scores.json", "--kind", "bar"]).kind
        'bar'
    """
    parser = _Parser(prog="macattr", description="Rank network layers by Mask Attribute Conductance.",
                     formatter_class=_HelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"macattr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the subcommand too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of any error")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[debug], help=text, description=text, formatter_class=_HelpFormatter)
        sub.set_defaults(run=name)
        return sub

    demo = command("demo", "the embedded default: a small restoration network on bundled photos")
    demo.add_argument("--out", default="demo", help="output folder")
    demo.add_argument("--k", type=_parse_k, default=0.1, help="fraction in (0, 1] or count of layers to select")
    demo.add_argument("--n-steps", type=_positive_int, default=200, help="grid intervals N of the path")
    demo.add_argument("--pretrain-steps", type=_positive_int, default=300, help="mask pre-training steps")
    demo.add_argument("--seed", type=int, default=0, help="seed of the weights, the masks and the degradations")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    rank = command("rank", "rank the layers of your model over a folder of images or a loader")
    _rank_options(rank)

    plot = command("plot", "depth profile, heatmap or bar chart of one or more scores files")
    plot.add_argument("scores", nargs="+", help="scores.json written by rank or demo (several: one profile)")
    plot.add_argument("--out", default="heatmap.png", help="PNG, SVG or PDF, by extension")
    plot.add_argument("--kind", choices=list(FIGURE_KINDS), default="heatmap", help="the figure")
    plot.add_argument("--top-k", type=_parse_k, default=0.1, help="mark these layers: a fraction or a count")
    plot.add_argument("--log", action=argparse.BooleanOptionalAction, default=None,
                      help="log colour scale (default: when the scores span over two decades)")  # fmt: skip
    plot.add_argument("--dpi", type=_dpi, default=120, help="dots per inch of a PNG, 10 to 2400")

    compare = command("compare", "two or more scores files: their figures and rank agreement")
    compare.add_argument("scores", nargs="+", help="two or more scores files of the same model")
    compare.add_argument("--out", default="comparison.png", help="PNG, SVG or PDF, by extension")
    compare.add_argument("--kind", choices=list(COMPARE_KINDS), default="heatmap", help="the figure")
    compare.add_argument("--top-k", type=_parse_k, default=0.1, help="the top k compared: a fraction or a count")
    compare.add_argument("--allow-partial", action="store_true", help="compare files sharing under half their layers")
    compare.add_argument("--dpi", type=_dpi, default=120, help="dots per inch of a PNG, 10 to 2400")
    return parser


def _rank_options(rank: argparse.ArgumentParser) -> None:
    """The options of ``macattr rank``, in groups."""
    given = rank.add_argument_group("input", "what is analysed: --images or --loader, one of them")
    given.add_argument("--images", help="folder of PNG/JPEG/BMP/TIFF images (8 or 16 bits, or floats in [0, 1])")
    given.add_argument("--channels", type=int, choices=[1, 3], default=3, help="read --images as 3 (RGB) or 1 (grey)")
    given.add_argument("--degrade", type=_parse_tasks, default=[],
                       help="degrade each image, one batch per task, e.g. noise:25,blur:2,jpeg:50 (noise σ on 0-255, "
                       "blur σ in pixels, JPEG quality)")  # fmt: skip
    given.add_argument("--per-task", type=_positive_int, help="images per degradation (RAM: 10; default: all)")
    given.add_argument("--size", type=_positive_int, help="centre-crop images to this size in pixels")
    given.add_argument("--loader", help="package.module:function returning an iterable of batches (any model)")

    model = rank.add_argument_group("model")
    model.add_argument("--model", required=True, help="package.module:factory or path/to/file.py:factory")
    model.add_argument("--weights", help="state dict file, loaded with torch.load(weights_only=True)")
    model.add_argument("--weights-key", help="the key of the state dict in the file (BasicSR: params, params_ema; "
                       "default: params when both are there, with a note)")  # fmt: skip
    model.add_argument("--non-strict", action="store_true",
                       help="load the tensors that fit and list the ones left out, instead of refusing the "
                       "file")  # fmt: skip
    model.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu; under torchrun on GPUs: "
                       "cuda:LOCAL_RANK)")  # fmt: skip

    method = rank.add_argument_group("method", "what a layer's score is")
    method.add_argument("--method", choices=[name for entry in BUILT_IN_METHODS.values()
                                             for name in (entry.name, *entry.aliases)],
                        default="mac", metavar="METHOD", help=f"{_methods_help()} (default: mac)")  # fmt: skip
    method.add_argument("--target", type=_parse_target, default="gradient_magnitude",
                        help=f"the attributed output: one of {', '.join(TARGET_NAMES)}; label (each sample's own, "
                        "from (input, label) batches); a class index for classifiers; or indices into each sample's "
                        "output, such as 15,5")  # fmt: skip
    method.add_argument("--path", choices=["mask", "linear", "blur"],
                        help="the path of mac, conductance or internal_influence (default: the method's own, the "
                        "mask path for mac, the linear path for the others)")  # fmt: skip
    method.add_argument("--mask-ratio", type=_positive_float, help="r of the mask path, a share of the cells "
                        "(default 0.5)")  # fmt: skip
    method.add_argument("--sharpness", type=_positive_float, help="δ of the mask path (default 1e4; 'inf': hard)")
    method.add_argument("--patch-size", type=_positive_int, help="cell size of the mask path in pixels (default 1)")
    method.add_argument("--mask-dims", choices=["image", "sequence", "volume"],
                        help="what the mask path masks cell by cell: image (N, C, H, W) pixels (default), sequence "
                        "(N, T, D) tokens, volume (N, C, D, H, W) voxels")  # fmt: skip
    method.add_argument("--ramp", action="store_true", default=None,
                        help="reveal each masked cell linearly, one after another, instead of the sigmoid: step "
                        "sums converge once N has several steps per masked cell (tokens, patches)")  # fmt: skip
    method.add_argument("--blur-sigma", type=_positive_float, help="σ of --path blur at its start, in pixels "
                        "(default 4)")  # fmt: skip
    method.add_argument("--baseline", type=float, default=0.0, help="the baseline x' of the path")
    method.add_argument("--normalize", type=_parse_normalize,
                        help=f"normalise the images per channel before the path: {', '.join(NORMALIZATIONS)}, or the "
                        "means then the standard deviations, e.g. 0.5,0.5,0.5,0.25,0.25,0.25 (the baseline stays 0 in "
                        "that space)")  # fmt: skip
    method.add_argument("--exclude", type=_regex, metavar="REGEX",
                        help="leave out the candidate layers whose names match this regular expression (a position "
                        "embedding, a layer that sees no input)")  # fmt: skip
    method.add_argument("--ram-code", action="store_true",
                        help="MAC as the RAM authors' code computes it: their grid (stops at 1 - r/N), the right "
                        "rule, numpy's pixel order, ImageNet normalisation, k rounded down")  # fmt: skip

    estimator = rank.add_argument_group("estimator", "the step sum and its certificate")
    estimator.add_argument("--n-steps", type=_positive_int, default=200, help="grid intervals N of the path")
    estimator.add_argument("--rule", choices=list(RULES), default="left", metavar="RULE",
                           help="conductance's step rule: left (the paper's Eq. 9), right (the RAM code), "
                           "trapezoid; or gauss2, gauss3, gauss4 (m Gauss-Legendre nodes inside each of the N steps: "
                           "N (m + 1) + 1 passes per image), -graded for nodes crowded to each step's "
                           "start")  # fmt: skip
    estimator.add_argument("--tolerance", type=_probability, default=0.1,
                           help="relative error the scores must be within: warn (or with --strict refuse) when a "
                           "layer's estimated error or an image's completeness gap is over it")  # fmt: skip
    estimator.add_argument("--strict", action="store_true",
                           help="refuse (exit 2, no files) a ranking whose estimated error is over "
                           "--tolerance")  # fmt: skip
    estimator.add_argument("--check-steps", action="store_true",
                           help="first compare the top k at N and N/2 on 4 images, and say whether N is large "
                           "enough")  # fmt: skip
    estimator.add_argument("--seed", type=int, default=0, help="seed of the masks, the degradations and the weights "
                           "of a factory without --weights")  # fmt: skip
    estimator.add_argument("--internal-batch-size", type=_positive_int,
                           help="rows (images × grid points) per forward pass (default: all of a batch's)")  # fmt: skip

    selection = rank.add_argument_group("selection", "which layers are reported as the top k")
    selection.add_argument("--k", type=_parse_k, default=0.1, help="a fraction in (0, 1] or a count")
    selection.add_argument("--budget", choices=["layers", "parameters"], default="layers",
                           help="what --k counts: layers (RAM's rule) or the model's parameters")  # fmt: skip
    selection.add_argument("--strategy", choices=list(STRATEGIES), default="greedy",
                           help="how the top k fills the budget: greedy (down the ranking), per_parameter (by score "
                           "per parameter), knapsack (the largest summed score that fits --budget parameters), blocks "
                           "(whole blocks by their summed score)")  # fmt: skip
    selection.add_argument("--ties", choices=["together", "apart"], default=None,
                           help="layers whose scores tie (a convolution and its eval-mode BatchNorm): selected "
                           "together and counted once, or each on its own (default: together; apart with "
                           "--ram-code, whose code counts layers)")  # fmt: skip
    selection.add_argument("--until-stable", type=_probability, metavar="P",
                           help="add images (per task, in passes) until the bootstrap probability that the top k "
                           "stays the same reaches P, e.g. 0.95 (default: every image)")  # fmt: skip

    output = rank.add_argument_group("output")
    output.add_argument("--out", default="scores.json", help="scores file (.json)")
    output.add_argument("--ram-files", help="also write RAM's filter_*.txt into this folder")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")

    runs = rank.add_argument_group("runs", "resuming, and several processes under torchrun")
    runs.add_argument("--checkpoint", help="resume file, updated after every batch")
    runs.add_argument("--backend", choices=["nccl", "gloo"], help="under torchrun (default: NCCL on CUDA, Gloo on "
                      "CPU)")  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); returns the exit status.

    Examples:
        >>> main(["plot", "no/such/scores.json"])  # prints "macattr: error: scores file ... does not exist"
        2
    """
    args = build_parser().parse_args(argv)
    from macattr import commands  # torch and the rest load once the arguments parse
    from macattr.ranking.distributed import RankFailed

    run = getattr(commands, args.run)
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


def entry() -> None:
    """The ``macattr`` executable (and ``python -m macattr``): ``main()``, then the end of the process.

    A process of a ``torchrun`` group (``WORLD_SIZE`` > 1) ends without the interpreter's teardown once its
    output is flushed: there Gloo can abort a process (SIGABRT, "terminate called without an active exception")
    after all its work is done, and torchrun would report the run as failed.
    """
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a reader that has gone: nothing more can reach it
                pass
        os._exit(status)
    sys.exit(status)


def _show_warning(message: Warning, category: type, filename: str, lineno: int, file: object = None,
                  line: Optional[str] = None) -> None:  # fmt: skip
    """A warning on stderr as one ``macattr: warning: ...`` line (``--debug`` shows Python's own form)."""
    print(f"macattr: warning: {message}", file=sys.stderr)


def _status_of(error: Exception) -> int:
    """2 for an error in the user's input that macattr names (its own checks and the command's), 1 otherwise."""
    from macattr.commands import CommandError

    if isinstance(error, (CommandError, FileInUse)):
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

__all__ = ["build_parser", "entry", "main"]
