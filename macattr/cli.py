"""The ``macattr`` command: ``demo``, ``rank``, ``plot`` and ``compare``.

Errors (missing file, bad module path, empty image folder, k out of range, ...)
print one line ``macattr: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from macattr.degradations import degrade
from macattr.images import center_crop, image_files, read_image
from macattr.plots import plot_comparison, plot_layer_importance
from macattr.ranking import METHODS, rank_layers
from macattr.scores import LayerScores, resolve_k


class CommandError(Exception):
    """A user error the command reports in one line."""


def parse_k(text: str) -> Union[int, float]:
    """ "0.1" → 0.1 (fraction), "3" → 3 (count)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a fraction in (0, 1] or a count >= 1, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"k must be a fraction in (0, 1] or a count >= 1, got {text!r}")
    return value


def parse_degradations(text: str) -> List[Tuple[str, float]]:
    """ "noise:25,blur:2,jpeg:50" → [("noise", 25.0), ("blur", 2.0), ("jpeg", 50.0)]."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, level = item.partition(":")
        if kind not in ("noise", "blur", "jpeg") or not level:
            raise argparse.ArgumentTypeError(f"degradation must look like noise:25, blur:2 or jpeg:50, got {item!r}")
        try:
            out.append((kind, float(level)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"degradation level must be a number, got {item!r}") from None
    return out


def load_model(spec: str, weights: Optional[str]) -> torch.nn.Module:
    """Build ``module:factory`` (a class or function with no required arguments) and load ``weights``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"--model must look like package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name!r} for --model: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"{module_name!r} has no callable {attribute!r} for --model")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise CommandError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CommandError(f"weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("params_ema", "params", "state_dict", "model"):  # BasicSR / RAM / Lightning layouts
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise CommandError(f"weights {path} do not fit --model {spec}: {str(error).splitlines()[0]}") from None
    return model.eval()


def image_batches(folder: str, size: Optional[int], degradations: Sequence[Tuple[str, float]], seed: int) -> list:
    """One batch per image (and per degradation): dicts with "lq", "gt" and "task"."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for file in image_files(folder):
        clean = read_image(file)
        clean = center_crop(clean, size)[None] if size else clean[None]
        if not degradations:
            batches.append({"lq": clean, "gt": clean, "task": ["clean"]})
        for kind, level in degradations:
            lq = degrade(clean, kind, level, generator)
            batches.append({"lq": lq, "gt": clean, "task": [f"{kind}{level:g}"]})
    return batches


def _demo(args: argparse.Namespace) -> None:
    from macattr.demo import run_demo

    run_demo(args.out, k=args.k, n_steps=args.n_steps, pretrain_steps=args.pretrain_steps, seed=args.seed,
             progress=not args.no_progress)  # fmt: skip


def _rank(args: argparse.Namespace) -> None:
    if args.method == "gradnorm" and not args.degrade:
        raise CommandError("--method gradnorm needs --degrade: it scores the loss between restored degraded "
                           "images and the clean ones")  # fmt: skip
    model = load_model(args.model, args.weights)
    batches = image_batches(args.images, args.size, args.degrade, args.seed)
    scores = rank_layers(
        model, batches, args.method, target=args.target, n_steps=args.n_steps, mask_ratio=args.mask_ratio,
        sharpness=args.sharpness, patch_size=args.patch_size, seed=args.seed,
        samples_per_group=args.per_task, group="task" if args.per_task else None, device=args.device,
        internal_batch_size=args.internal_batch_size, progress=not args.no_progress, checkpoint=args.checkpoint,
    )  # fmt: skip
    top = scores.top_k(args.k)
    scores.save(args.out)
    if args.ram_files:
        scores.to_ram_files(args.ram_files)
    print(f"{scores.method}: {scores.images} images, {len(scores)} layers; top {len(top)} (k={args.k}):")
    for rank, name in enumerate(top, start=1):
        print(f"  {rank:2d}. {name}  {scores[name]:.4g}")
    print(f"wrote {args.out}")


def _load_scores(path: str) -> LayerScores:
    if not Path(path).is_file():
        raise CommandError(f"scores file {path} does not exist")
    return LayerScores.load(path)


def _plot(args: argparse.Namespace) -> None:
    scores = _load_scores(args.scores)
    if args.top_k is not None:
        resolve_k(args.top_k, len(scores))
    figure = plot_layer_importance(scores, kind=args.kind, top_k=args.top_k, log=args.log)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


def _compare(args: argparse.Namespace) -> None:
    a, b = _load_scores(args.a), _load_scores(args.b)
    figure = plot_comparison(a, b, kind=args.kind, top_k=args.top_k)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=args.dpi)
    print(f"Spearman {a.spearman(b):.4f}  Kendall {a.kendall(b):.4f}; wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="macattr", description="Rank network layers by Mask Attribute Conductance.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the embedded default: a small restoration network on bundled photos")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--k", type=parse_k, default=0.1, help="fraction in (0, 1] or count of layers (default 0.1)")
    demo.add_argument("--n-steps", type=int, default=200, help="grid intervals N (default 200)")
    demo.add_argument("--pretrain-steps", type=int, default=200, help="mask pre-training steps (default 200)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    rank = commands.add_parser("rank", help="rank the layers of your model over a folder of images")
    rank.add_argument("--model", required=True, help="package.module:factory building the nn.Module")
    rank.add_argument("--weights", help="state dict file, loaded with torch.load(weights_only=True)")
    rank.add_argument("--images", required=True, help="folder of PNG/JPEG images")
    rank.add_argument("--out", default="scores.json", help="scores file (default scores.json)")
    rank.add_argument("--method", choices=METHODS, default="mac", help="gradnorm needs --degrade")
    rank.add_argument("--k", type=parse_k, default=0.1, help="fraction in (0, 1] or count (default 0.1)")
    rank.add_argument("--degrade", type=parse_degradations, default=[], help="e.g. noise:25,blur:2,jpeg:50")
    rank.add_argument("--per-task", type=int, help="images per degradation (RAM: 10)")
    rank.add_argument("--size", type=int, help="centre-crop images to this size")
    rank.add_argument("--target", default="gradient_magnitude", choices=["gradient_magnitude", "sum", "mean"])
    rank.add_argument("--n-steps", type=int, default=200)
    rank.add_argument("--mask-ratio", type=float, default=0.5)
    rank.add_argument("--sharpness", type=float, default=1e4, help="δ; 'inf' for the hard path")
    rank.add_argument("--patch-size", type=int, default=1)
    rank.add_argument("--seed", type=int, default=0)
    rank.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    rank.add_argument("--internal-batch-size", type=int)
    rank.add_argument("--checkpoint", help="resume file, updated after every image")
    rank.add_argument("--ram-files", help="also write RAM's filter_*.txt into this folder")
    rank.add_argument("--no-progress", action="store_true")
    rank.set_defaults(run=_rank)

    plot = commands.add_parser("plot", help="heatmap or bar chart of a scores file")
    plot.add_argument("scores", help="scores.json written by rank or demo")
    plot.add_argument("--out", default="heatmap.png")
    plot.add_argument("--kind", choices=["heatmap", "bar"], default="heatmap")
    plot.add_argument("--top-k", type=parse_k, default=0.1, help="mark these layers (default 0.1)")
    plot.add_argument("--log", action=argparse.BooleanOptionalAction, default=None, help="log colour scale")
    plot.add_argument("--dpi", type=int, default=120)
    plot.set_defaults(run=_plot)

    compare = commands.add_parser("compare", help="two scores files side by side with their rank correlation")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--out", default="comparison.png")
    compare.add_argument("--kind", choices=["heatmap", "bar"], default="heatmap")
    compare.add_argument("--top-k", type=parse_k, default=0.1)
    compare.add_argument("--dpi", type=int, default=120)
    compare.set_defaults(run=_compare)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sharpness", None) is not None and math.isnan(args.sharpness):
        parser.error("--sharpness must be a number > 0")
    try:
        args.run(args)
    except (CommandError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"macattr: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
