"""The cost of every registered ranking method, side by side: ``rank_layers`` on the demo network.

    python benchmarks/bench_methods.py                      # every method of macattr.ranking.methods
    python benchmarks/bench_methods.py --n-steps 50 --threads 1 --json methods.json

Each method ranks the 35 candidate layers of the (untrained) demo network over the demo's analysis batches
(two 48 × 48 crops per task, three tasks), best of ``--reps`` runs after a warm-up run; the table gives the
seconds, the forward+backward passes the method's scorer needs per image (N + 1 for a path method, 1 for
gradnorm, 0 for the orders) and the top 4 it picks. A method registered with ``macattr.ranking.methods.register``
before the script runs is timed with the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from macattr import rank_layers
from macattr.ranking.methods import methods
from macattr.restoration.demo import demo_batches, demo_network


def passes_per_image(uses_path: bool, needs_loader: bool, n_steps: int) -> int:
    """Forward+backward passes per image of a method's scorer (the grid points of a path, one gradient)."""
    return n_steps + 1 if uses_path else int(needs_loader)


def run(n_steps: int, reps: int) -> List[Dict[str, Any]]:
    torch.manual_seed(0)
    model, batches = demo_network(), demo_batches()
    rows = []
    for method in methods():
        times = []
        for _ in range(reps + 1):  # the first run warms up
            started = time.perf_counter()
            scores = rank_layers(model, batches, method.name, n_steps=n_steps, seed=0, progress=False)
            times.append(time.perf_counter() - started)
        rows.append(dict(method=method.name, label=method.label, seconds=min(times[1:]), images=scores.images,
                         passes_per_image=passes_per_image(method.uses_path, method.needs_loader, n_steps),
                         top=scores.top_k(4)))  # fmt: skip
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-steps", type=int, default=50, help="grid intervals N of the path methods (default 50)")
    parser.add_argument("--reps", type=int, default=2, help="timed runs after the warm-up (default 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.n_steps < 1 or args.reps < 1:
        parser.error("--n-steps and --reps must be >= 1")
    torch.set_num_threads(args.threads)
    rows = run(args.n_steps, args.reps)
    print(f"torch {torch.__version__}, {args.threads} thread(s), demo network, N = {args.n_steps}")
    print(f"{'method':20s} {'seconds':>8s} {'images':>6s} {'passes/image':>12s}  top 4")
    for r in rows:
        print(f"{r['method']:20s} {r['seconds']:8.2f} {r['images']:6d} {r['passes_per_image']:12d}  "
              f"{', '.join(r['top'])}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
