"""``python -m examples.selection``: the selection study on a domain (see [`harness`][examples.selection.harness]).

python -m examples.selection --domain digits --out runs/selection --threads 1       # both digits tasks: 8 minutes
python -m examples.selection --domain restoration --out runs/selection --threads 1  # RAM's tiny preset: about an hour
python -m examples.selection --domain pitch --out runs/selection --threads 2        # CREPE tiny on shifted tones
python -m examples.selection --domain digits --allocation --out runs/selection      # LoRA's ranks placed three ways
python -m examples.selection --domain digits --out runs/quick --quick               # seconds: a check that it runs
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from examples.digits.experiment import Settings

from .digits import domains, rank_allocation
from .harness import Protocol, run

ALLOCATED = ("mac", "conductance", "internal_influence", "gradnorm", "fisher", "kappa", "random")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.selection", description=__doc__.splitlines()[0])
    parser.add_argument("--domain", choices=["digits", "restoration", "pitch"], default="digits",
                        help="the domain (default digits)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder for the results and the cache of runs")
    parser.add_argument("--seeds", type=int, default=Protocol.seeds, help="fine-tuning seeds (default 3)")
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs, two entries: a check that it runs")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument(
        "--allocation",
        action="store_true",
        help="digits: compare uniform LoRA ranks, ranks shared by scores and top layers instead",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings, protocol = Settings(), replace(Protocol(), seeds=args.seeds)
    if args.quick:
        settings = replace(settings, pretrain_epochs=2, finetune_epochs=1, n_steps=4, analysis_images=25,
                           train_images=100)  # fmt: skip
        protocol = replace(protocol, seeds=1, lrs=(1e-3, 1e-2), budgets=(0.15,), entries=(("mac", "knapsack"),),
                           baselines=(("gradnorm", "greedy"), ("kappa", "greedy")), full=False)  # fmt: skip
    if args.allocation:
        if args.domain != "digits":
            parser.error("--allocation compares LoRA ranks: it runs on --domain digits")
        methods = ("mac", "gradnorm") if args.quick else ALLOCATED
        for domain in domains(settings):
            rank_allocation(domain, methods, domain.lrs[:1] if args.quick else domain.lrs, protocol.seeds, 5,
                            args.out)  # fmt: skip
        return 0
    if args.domain == "digits":
        chosen = domains(settings)
    elif args.domain == "pitch":
        from .pitch import PitchDomain, PitchSettings

        quick = PitchSettings(train_frames=64, validation_frames=32, test_frames=32, analysis_frames=16, steps=2,
                              batch=8, n_steps=4)  # fmt: skip
        chosen = (PitchDomain(quick if args.quick else PitchSettings()),)
    else:
        from .restoration import RestorationDomain

        chosen = (RestorationDomain(args.out, "test" if args.quick else "tiny"),)
    for domain in chosen:
        tuned = protocol if args.quick else replace(protocol, lrs=domain.lrs,
                                                     budgets=getattr(domain, "budgets", protocol.budgets))  # fmt: skip
        results = run(domain, tuned, args.out)
        print((args.out / f"selection_{domain.name}.md").read_text())
    return 0 if results else 1


sys.exit(main())
