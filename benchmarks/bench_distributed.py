"""rank_layers on one process against several (torch.distributed), same images, same scores.

    python benchmarks/bench_distributed.py                           # CPU: Gloo, 1 and 2 processes
    python benchmarks/bench_distributed.py --device cuda --worlds 1,2,4,8  # GPUs: NCCL, one per process

The SwinIR-style network of ``macattr.restoration`` (dim 30, 2 × 2 blocks) ranks
``--images`` degraded 32 × 32 crops by MAC (N = ``--n-steps``), one image per
batch. On the CPU the machine's threads are divided among the processes. The
time is measured inside the processes, from a barrier after start-up to the
end of ``rank_layers`` (process start and imports excluded); the scores of
every world size are compared with one process's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from macattr import LayerScores, rank_layers
from macattr.restoration.data import degraded_batches
from macattr.restoration.images import sample_images
from macattr.restoration.networks import SwinIRStyle


def _worker(rank: int, world: int, config: dict) -> None:
    cuda = config["device"] == "cuda"
    torch.set_num_threads(max(1, config["threads"] // world))
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{config['folder']}/store{world}", rank=rank,
                            world_size=world, timeout=timedelta(minutes=10))  # fmt: skip
    torch.manual_seed(0)
    model = SwinIRStyle(dim=30, depths=(2, 2), heads=3, window=8)
    clean = torch.stack(sample_images(32))
    tasks = ["noise25", "blur2", "jpeg50"]
    batches = degraded_batches(clean.repeat(config["images"] // 12 + 1, 1, 1, 1)[: config["images"] // 3], tasks,
                               seed=0, batch_size=1)  # fmt: skip
    device = f"cuda:{rank}" if cuda else None
    dist.barrier()
    started = time.perf_counter()
    scores = rank_layers(model, batches, n_steps=config["n_steps"], seed=0, device=device, progress=False)
    seconds = time.perf_counter() - started
    if rank == 0:
        scores.save(Path(config["folder"]) / f"scores{world}.json")
        (Path(config["folder"]) / f"time{world}.txt").write_text(f"{seconds}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,2", help="numbers of processes, e.g. 1,2,4")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--n-steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        config = dict(folder=folder, device=args.device, images=args.images, n_steps=args.n_steps, threads=args.threads)
        for world in [int(w) for w in args.worlds.split(",")]:
            mp.spawn(_worker, args=(world, config), nprocs=world, join=True)
            seconds = float((Path(folder) / f"time{world}.txt").read_text())
            scores = LayerScores.load(Path(folder) / f"scores{world}.json")
            reference = LayerScores.load(Path(folder) / "scores1.json") if world > 1 else scores
            worst = max(abs(scores[n] - reference[n]) / abs(reference[n]) for n in reference)
            rows.append(dict(processes=world, seconds=seconds, images=scores.images, max_rel_diff=worst))
    base = rows[0]["seconds"]
    print(
        f"{'processes':>9s} {'threads each':>12s} {'seconds':>8s} {'speed-up':>8s} {'images':>6s} {'max rel diff':>12s}"
    )
    for row in rows:
        threads = "1 GPU" if args.device == "cuda" else str(max(1, args.threads // row["processes"]))
        print(f"{row['processes']:9d} {threads:>12s} {row['seconds']:8.2f} {base / row['seconds']:8.2f} "
              f"{row['images']:6d} {row['max_rel_diff']:12.1e}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
