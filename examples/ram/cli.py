"""The RAM reference pipeline on macattr: mask pre-training, MAC analysis, fine-tuning, evaluation, ablations.

    python -m examples.ram all --preset tiny --out runs/tiny                     # CPU, minutes
    python -m examples.ram ablate --preset medium --seeds 3 --out runs/medium    # CPU, ~2.5 h of one core
    python -m examples.ram ratios|robustness --preset medium --out runs/medium   # the other two studies
    python -m examples.ram all --preset small --device cuda --out runs/small     # one GPU
    python -m examples.ram pretrain|analyze|finetune|evaluate ...                # one stage; each resumes

`all` runs pretrain, analyze, finetune and evaluate; every stage runs the ones it needs first and skips
finished work, so an interrupted run resumes. Results: OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import torch

from macattr.ranking.methods import get_method
from macattr.restoration.networks import ARCHITECTURES
from macattr.scores import check_k

from . import pipeline, studies
from .presets import ABLATION, PRESETS, Preset, preset

STAGES = {
    "pretrain": pipeline.pretrain,
    "analyze": pipeline.analyze,
    "finetune": pipeline.finetune,
    "evaluate": pipeline.evaluate,
    "ablate": studies.ablate,
    "ratios": studies.ratios,
    "robustness": studies.robustness,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.ram", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["all", *STAGES])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="swinir")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; reruns resume)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--data-root", type=Path, help="folder with SOTS/, Rain100L/, LOL/, GoPro/ (optional)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, data and analysis")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per method (ablate, ratios)")
    parser.add_argument("--steps-scale", type=float,
                        help="multiply the preset's step counts (dry runs); --pretrain-steps and --finetune-steps "
                        "are taken as given")  # fmt: skip
    parser.add_argument("--n-steps", type=int, help="grid intervals N of the analyses (override the preset)")
    parser.add_argument("--tasks", help="comma-separated tasks (override the preset), e.g. noise25,jpeg50")
    parser.add_argument("--methods", help=f"ablate: comma-separated methods among {', '.join(ABLATION)} "
                        "(default: the preset's), e.g. mac,full")  # fmt: skip
    parser.add_argument("--k", type=float, help="fraction of layers to fine-tune (default: 0.1 SwinIR, 0.3 PromptIR)")
    parser.add_argument("--budget", choices=["layers", "parameters"],
                        help="ablate: what --k counts, layers (RAM, the default) or the network's parameters; the "
                        "parameter budget's runs go to OUT/ablate_parameters/ beside the layer budget's")  # fmt: skip
    parser.add_argument("--pretrain-steps", type=int, help="override the preset")
    parser.add_argument("--finetune-steps", type=int, help="override the preset")
    parser.add_argument("--finetune-loss", choices=sorted(pipeline.LOSSES), help="override the preset")
    parser.add_argument("--finetune-lr", type=float,
                        help="peak learning rate of fine-tuning (override the preset; the cosine schedule still ends "
                        "at the preset's final rate)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _methods(text: str) -> tuple:
    """The ablation's methods: registered methods (an alias stands for its method), "full" and "none"."""
    methods = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        methods.append(item if item in studies.WHOLE else get_method(item).name)
    if "mac" not in methods:
        raise ValueError("mac is missing")
    return tuple(methods)


def settings_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Preset:
    """The preset with the command line's overrides, each checked (``parser.error`` on a bad one)."""
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        settings = preset(args.preset, args.steps_scale)
    except ValueError as error:
        parser.error(str(error))
    if args.tasks is not None:
        tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
        if not tasks:
            parser.error("--tasks must name at least one task")
        settings = replace(settings, tasks=tasks)
    if args.methods is not None:
        try:
            settings = replace(settings, ablation=_methods(args.methods))
        except ValueError as error:
            parser.error(f"--methods must name mac (the reference) and only methods among {', '.join(ABLATION)}; "
                         f"got {args.methods!r} ({error})")  # fmt: skip
    if args.n_steps is not None:
        if args.n_steps < 1:
            parser.error(f"--n-steps must be >= 1, got {args.n_steps}")
        settings = replace(settings, analyze=replace(settings.analyze, n_steps=args.n_steps))
    if args.k is not None:
        try:
            settings = settings.with_k(args.arch, check_k(args.k))
        except ValueError as error:
            parser.error(f"--{error}")
    for stage, steps in (("pretrain", args.pretrain_steps), ("finetune", args.finetune_steps)):
        if steps is not None:
            if steps < 1:
                parser.error(f"--{stage}-steps must be >= 1, got {steps}")
            settings = replace(settings, **{stage: replace(getattr(settings, stage), steps=steps)})
    if args.budget is not None:
        settings = replace(settings, budget=args.budget)
    if args.finetune_loss is not None:
        settings = replace(settings, finetune=replace(settings.finetune, loss=args.finetune_loss))
    if args.finetune_lr is not None:
        try:
            settings = settings.with_finetune_lr(args.finetune_lr)
        except ValueError as error:
            parser.error(str(error))
    return settings


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_of(args, parser)
    if args.data_root is not None and not args.data_root.is_dir():
        parser.error(f"--data-root {args.data_root} is not a folder")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run = pipeline.Run(out=args.out, arch=args.arch, preset=settings, device=device, seed=args.seed,
                       seeds=args.seeds, data_root=args.data_root, progress=not args.no_progress)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = ["pretrain", "analyze", "finetune", "evaluate"] if args.stage == "all" else [args.stage]
    try:
        for stage in chosen:
            STAGES[stage](run)
    except (FileNotFoundError, ValueError) as error:
        print(f"python -m examples.ram: error: {error}", file=sys.stderr)
        return 2
    print(f"results: {args.out / 'results.md'} ({time.perf_counter() - started:.0f} s)")
    return 0
