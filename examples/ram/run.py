"""The RAM reference pipeline on macattr: mask pre-training, MAC analysis, fine-tuning, evaluation, ablations.

    python examples/ram/run.py all --preset tiny --out runs/tiny                    # CPU, minutes
    python examples/ram/run.py ablate --preset medium --seeds 3 --out runs/medium   # CPU, ~2.5 h of one core
    python examples/ram/run.py ratios|robustness --preset medium --out runs/medium  # the other two studies
    python examples/ram/run.py all --preset small --device cuda --out runs/small    # one GPU
    python examples/ram/run.py pretrain|analyze|finetune|evaluate ...               # one stage; each resumes

`all` runs pretrain, analyze, finetune and evaluate; every stage runs the ones it needs first and skips
finished work, so an interrupted run resumes. Results: OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

import stages
from macattr.restoration.networks import ARCHITECTURES
from macattr.scores import check_k
from presets import ABLATION, PRESETS, preset, set_finetune_lr

STAGES = {
    "pretrain": stages.pretrain,
    "analyze": stages.analyze,
    "finetune": stages.finetune,
    "evaluate": stages.evaluate,
    "ablate": stages.ablate,
    "ratios": stages.ratios,
    "robustness": stages.robustness,
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["all", *STAGES])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="swinir")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; reruns resume)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--data-root", type=Path, help="folder with SOTS/, Rain100L/, LOL/, GoPro/ (optional)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, data and analysis")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per method (ablate, ratios)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply the preset's step counts (dry runs); --pretrain-steps and --finetune-steps "
                        "are taken as given")  # fmt: skip
    parser.add_argument("--n-steps", type=int, help="grid intervals N of the analyses (override the preset)")
    parser.add_argument("--tasks", help="comma-separated tasks (override the preset), e.g. noise25,jpeg50")
    parser.add_argument("--methods", help="ablate: comma-separated methods (default: the preset's), e.g. mac,full")
    parser.add_argument("--k", type=float, help="fraction of layers to fine-tune (default: 0.1 SwinIR, 0.3 PromptIR)")
    parser.add_argument("--pretrain-steps", type=int, help="override the preset")
    parser.add_argument("--finetune-steps", type=int, help="override the preset")
    parser.add_argument("--finetune-loss", choices=sorted(stages.LOSSES), help="override the preset")
    parser.add_argument("--finetune-lr", type=float,
                        help="peak learning rate of fine-tuning (override the preset; the cosine schedule still ends "
                        "at the preset's final rate)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if not args.steps_scale > 0:
        parser.error(f"--steps-scale must be > 0, got {args.steps_scale}")
    settings = preset(args.preset, args.steps_scale)
    if args.tasks is not None:
        settings["tasks"] = [task.strip() for task in args.tasks.split(",") if task.strip()]
        if not settings["tasks"]:
            parser.error("--tasks must name at least one task")
    if args.methods is not None:
        methods = [method.strip() for method in args.methods.split(",") if method.strip()]
        if "mac" not in methods or not set(methods) <= set(ABLATION):
            parser.error(f"--methods must name mac (the reference) and only methods among {', '.join(ABLATION)}; "
                         f"got {args.methods!r}")  # fmt: skip
        settings["ablation"] = methods
    if args.n_steps is not None:
        if args.n_steps < 1:
            parser.error(f"--n-steps must be >= 1, got {args.n_steps}")
        settings["analyze"]["n_steps"] = args.n_steps
    if args.k is not None:
        try:
            settings["k"][args.arch] = check_k(args.k)
        except ValueError as error:
            parser.error(f"--{error}")
    for stage, steps in (("pretrain", args.pretrain_steps), ("finetune", args.finetune_steps)):
        if steps is not None:
            if steps < 1:
                parser.error(f"--{stage}-steps must be >= 1, got {steps}")
            settings[stage]["steps"] = steps
    if args.finetune_loss is not None:
        settings["finetune"]["loss"] = args.finetune_loss
    if args.finetune_lr is not None:
        try:
            set_finetune_lr(settings, args.finetune_lr, "--finetune-lr")
        except ValueError as error:
            parser.error(str(error))
    if args.data_root is not None and not args.data_root.is_dir():
        parser.error(f"--data-root {args.data_root} is not a folder")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run = stages.Run(out=args.out, arch=args.arch, settings=settings, preset_name=args.preset, device=device,
                     seed=args.seed, seeds=args.seeds, data_root=args.data_root,
                     progress=not args.no_progress)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = ["pretrain", "analyze", "finetune", "evaluate"] if args.stage == "all" else [args.stage]
    try:
        for stage in chosen:
            STAGES[stage](run)
    except (FileNotFoundError, ValueError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    print(f"results: {args.out / 'results.md'} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
