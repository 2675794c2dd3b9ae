"""rank_layers across two processes (torch.distributed, Gloo on CPU): same scores as one process, resume per
process, a failing process, and the command under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import failing_at
from macattr import LayerScores, rank_layers
from macattr.restoration.images import sample_images, save_image


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(4, 3, 3, padding=1)).double()  # fmt: skip


def _batches(count: int = 5) -> list:
    """An odd number of batches of different sizes, so that rank 0 scores one batch more than rank 1."""
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(1 + i % 2, 3, 8, 8, generator=generator, dtype=torch.float64) for i in range(count)]


def _worker(rank: int, folder: str, case: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store-{case}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # fmt: skip
    out = Path(folder)
    try:
        model, batches = _model(), _batches()
        common = dict(n_steps=6, seed=3, progress=False, checkpoint=out / "run.ckpt.json")
        if case == "interrupted":
            rank_layers(model, failing_at(batches, 3), **common)
        elif case == "rank1-fails":
            loader = failing_at(batches, 2) if rank == 1 else batches
            rank_layers(model, loader, **{**common, "checkpoint": None})
        else:
            scores = rank_layers(model, batches, **common)
            scores.save(out / f"{case}-rank{rank}.json")
    except Exception as error:
        (out / f"{case}-rank{rank}.error").write_text(f"{type(error).__name__}: {error}")
    finally:
        dist.destroy_process_group()


def _spawn(folder: Path, case: str) -> float:
    started = time.monotonic()
    mp.spawn(_worker, args=(str(folder), case), nprocs=2, join=True)
    return time.monotonic() - started


def test_two_processes_give_one_process_scores_and_resume_per_process(tmp_path: Path) -> None:
    single = rank_layers(_model(), _batches(), n_steps=6, seed=3, progress=False)
    _spawn(tmp_path, "interrupted")  # both processes stop at batch 3, each with its own checkpoint
    assert "batch 3 is unreadable" in (tmp_path / "interrupted-rank0.error").read_text()
    states = [json.loads((tmp_path / f"run.ckpt.rank{r}-of-2.json").read_text()) for r in range(2)]
    assert [s["scores"]["images"] for s in states] == [2, 2] and not any(s["complete"] for s in states)
    _spawn(tmp_path, "resumed")
    results = [LayerScores.load(tmp_path / f"resumed-rank{r}.json") for r in range(2)]
    assert dict(results[0]) == dict(results[1]) and results[0].images == single.images == 7
    for name in single:
        assert results[0][name] == pytest.approx(single[name], rel=1e-9)
    with pytest.raises(ValueError, match="written by 2 process"):
        rank_layers(_model(), _batches(), n_steps=6, seed=3, progress=False, checkpoint=tmp_path / "run.ckpt.json")


def test_a_failing_process_stops_every_process_within_seconds(tmp_path: Path) -> None:
    seconds = _spawn(tmp_path, "rank1-fails")
    assert "Broken: batch 2 is unreadable" == (tmp_path / "rank1-fails-rank1.error").read_text()
    assert (tmp_path / "rank1-fails-rank0.error").read_text() == (
        "RankFailed: rank 1 of 2 failed: Broken: batch 2 is unreadable"
    )
    assert seconds < 45  # two process starts included; a hang would last the 60 s timeout


def test_distributed_true_without_a_process_group_is_refused() -> None:
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        rank_layers(_model(), _batches(), n_steps=2, progress=False, distributed=True)
    with pytest.raises(TypeError, match="distributed must be None, True or False"):
        rank_layers(_model(), _batches(), n_steps=2, progress=False, distributed="yes")


def test_the_command_under_torchrun_writes_the_single_process_scores(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 3, 3, padding=1))
    """))  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(sample_images(16)[:3]):
        save_image(images / f"{i}.png", image)
    common = ["rank", "--model", "nets:build", "--images", "images", "--degrade", "noise:25,jpeg:50", "--n-steps",
              "8", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "macattr", *common, "--out", "one.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    both = subprocess.run([*launcher, "-m", "macattr", *common, "--out", "two.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert both.returncode == 0, both.stderr[-3000:]
    assert both.stdout.count("wrote two.json") == 1  # only rank 0 writes and prints
    one, two = LayerScores.load(tmp_path / "one.json"), LayerScores.load(tmp_path / "two.json")
    assert two.images == one.images == 6 and two.names == one.names
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-9)
