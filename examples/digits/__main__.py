"""``python -m examples.digits``: the digits experiment (see [`experiment`][examples.digits.experiment]).

python -m examples.digits --out runs/digits --seeds 5 --threads 1     # the evidence: about 20 minutes
python -m examples.digits --out runs/quick --quick                     # a minute: 2 seeds, few epochs
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from .experiment import Settings, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.digits", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for digits.json and digits.md")
    parser.add_argument("--seeds", type=int, default=Settings.seeds, help="fine-tuning seeds per method (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 seeds and few epochs: a check that it runs")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    settings = replace(Settings(), seeds=args.seeds)
    if args.quick:
        settings = replace(settings, seeds=2, pretrain_epochs=3, finetune_epochs=2, n_steps=4, analysis_images=25,
                           train_images=100)  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.out, settings)
    print((args.out / "digits.md").read_text())
    return 0 if results else 1


sys.exit(main())
