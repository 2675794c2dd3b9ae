"""rank_layers on a model sharded with FSDP2 (``fully_shard``) across two processes (Gloo on CPU): the default
settings give the unsharded model's scores, an odd number of batches does not hang, a checkpoint resumes per
process, and what a sharded model cannot give is refused by name."""

from __future__ import annotations

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

fsdp = pytest.importorskip("torch.distributed.fsdp")
DEADLINE_S = 90  # a process waiting in a collective that never comes would outlive it


class Scaled(nn.Module):
    """A Linear followed by a fixed per-feature scale held as a buffer (which FSDP2 does not shard)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), Scaled(16), nn.Tanh(), nn.Linear(16, 1)).double()


def _batches(count: int = 5) -> list:
    """An odd number of batches of different sizes: rank 0 scores three of them, rank 1 two."""
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(1 + i % 2, 6, generator=generator, dtype=torch.float64) for i in range(count)]


OPTIONS = dict(n_steps=6, seed=3, progress=False, target=0, mask_dims=(1,))


def _sharded(model: nn.Module) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for module in model:
        if any(p.numel() for p in module.parameters(recurse=False)) or isinstance(module, Scaled):
            fsdp.fully_shard(module, mesh=mesh)
    return fsdp.fully_shard(model, mesh=mesh)


def _worker(rank: int, folder: str, case: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store-{case}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=int(os.environ.get("SHARDED_TIMEOUT", "60"))))  # fmt: skip
    out = Path(folder)
    try:
        torch.set_num_threads(1)
        model = _model()
        if case == "other-buffer" and rank == 1:
            model[2].scale.mul_(2.0)
        model = _sharded(model)
        checkpoint = {"checkpoint": out / "run.ckpt.json"} if case in ("interrupted", "resumed") else {}
        if case == "interrupted":
            rank_layers(model, failing_at(_batches(), 3), **OPTIONS, **checkpoint)
        elif case == "gradnorm":
            rank_layers(model, [(x, torch.zeros(x.shape[0], 1, dtype=x.dtype)) for x in _batches()], "gradnorm",
                        progress=False)  # fmt: skip
        elif case == "kappa":
            rank_layers(model, _batches(), "kappa", progress=False).save(out / f"{case}-rank{rank}.json")
        elif case == "groups":
            rank_layers(model, _batches(), **OPTIONS, internal_batch_size=1)
        else:
            batches = _batches(count=int(case.split("-")[1])) if case.startswith("batches-") else _batches()
            rank_layers(model, batches, **OPTIONS, **checkpoint).save(out / f"{case}-rank{rank}.json")
    except Exception as error:
        (out / f"{case}-rank{rank}.error").write_text(f"{type(error).__name__}: {error}")
    finally:
        dist.barrier()  # both processes leave the group together (one leaving first may abort the other)
        dist.destroy_process_group()
        # the outcome is written; skip the interpreter's teardown, where Gloo with a never-run FSDP model
        # sometimes aborts (SIGABRT, "terminate called without an active exception") after all the work
        os._exit(0)


def _spawn(folder: Path, case: str) -> float:
    """Run ``case`` in two processes; fail (and stop them) if they are not done within the deadline."""
    started = time.monotonic()
    context = mp.spawn(_worker, args=(str(folder), case), nprocs=2, join=False)
    while not context.join(timeout=1):
        if time.monotonic() - started > DEADLINE_S:
            for process in context.processes:
                process.kill()
            pytest.fail(f"case {case!r}: the processes still ran after {DEADLINE_S} s (a hang)")
    return time.monotonic() - started


def _errors(folder: Path, case: str) -> list:
    return [
        (folder / f"{case}-rank{r}.error").read_text() for r in range(2) if (folder / f"{case}-rank{r}.error").exists()
    ]


def _assert_unsharded_scores(folder: Path, case: str, batches: list) -> None:
    assert _errors(folder, case) == []
    single = rank_layers(_model(), batches, **OPTIONS)
    results = [LayerScores.load(folder / f"{case}-rank{r}.json") for r in range(2)]
    assert dict(results[0]) == dict(results[1]) and results[0].images == single.images == len(torch.cat(batches))
    assert results[0].names == single.names
    for name in single:
        assert results[0][name] == pytest.approx(single[name], rel=1e-9)


@pytest.mark.parametrize("count", [5, 1])
def test_a_sharded_model_gives_the_unsharded_scores_with_an_odd_number_of_batches(tmp_path: Path, count: int) -> None:
    # 5 batches: rank 1 owns none of the last round; 1 batch: rank 1 owns nothing at all; both join in step
    _spawn(tmp_path, f"batches-{count}")
    _assert_unsharded_scores(tmp_path, f"batches-{count}", _batches(count))


def test_a_sharded_model_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    _spawn(tmp_path, "interrupted")
    assert any("batch 3 is unreadable" in text for text in _errors(tmp_path, "interrupted"))
    _spawn(tmp_path, "resumed")
    _assert_unsharded_scores(tmp_path, "resumed", _batches())


def test_a_sharded_model_with_another_buffer_in_one_process_is_refused(tmp_path: Path) -> None:
    _spawn(tmp_path, "other-buffer")
    expected = "process 1 of 2 holds another model than process 0: its tensor '2.scale' differs"
    assert [text.split(";")[0] for text in _errors(tmp_path, "other-buffer")] == [f"ValueError: {expected}"] * 2


def test_what_a_sharded_model_cannot_give_is_refused_in_every_process(tmp_path: Path) -> None:
    _spawn(tmp_path, "gradnorm")
    assert all("reads the gradients of each layer's own parameters" in t for t in _errors(tmp_path, "gradnorm"))
    assert len(_errors(tmp_path, "gradnorm")) == 2
    _spawn(tmp_path, "groups")
    texts = _errors(tmp_path, "groups")
    assert len(texts) == 2 and any("internal_batch_size=1 is below this batch's 2" in text for text in texts)
    assert any(text.startswith("RankFailed: rank") for text in texts)


def test_kappa_reads_each_sharded_weight_whole(tmp_path: Path) -> None:
    _spawn(tmp_path, "kappa")
    single = rank_layers(_model(), _batches(), "kappa", progress=False)
    results = [LayerScores.load(tmp_path / f"kappa-rank{r}.json") for r in range(2)]
    assert _errors(tmp_path, "kappa") == [] and dict(results[0]) == dict(results[1])
    assert dict(results[0]) == pytest.approx(dict(single), rel=1e-12)


def test_the_command_ranks_a_sharded_factory_under_torchrun(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(textwrap.dedent("""
        import torch
        import torch.distributed as dist
        from torch import nn
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 3, 3, padding=1))

        def build_sharded():
            model = build()
            mesh = init_device_mesh("cpu", (dist.get_world_size(),))
            for layer in (model[0], model[2]):
                fully_shard(layer, mesh=mesh)
            return fully_shard(model, mesh=mesh)
    """))  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(sample_images(16)[:3]):
        save_image(images / f"{i}.png", image)
    common = ["rank", "--images", "images", "--degrade", "noise:25", "--n-steps", "8", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "macattr", *common, "--model", "nets:build", "--out", "one.json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    sharded = [*launcher, "-m", "macattr", *common, "--model", "nets:build_sharded"]
    both = subprocess.run([*sharded, "--out", "two.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert both.returncode == 0, both.stderr[-3000:]
    one, two = LayerScores.load(tmp_path / "one.json"), LayerScores.load(tmp_path / "two.json")
    assert two.images == one.images == 3 and two.names == one.names
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-5)  # float32: sums in another order
    torch.save({}, tmp_path / "w.pth")
    refused = subprocess.run([*sharded, "--weights", "w.pth", "--out", "three.json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "leave out --weights" in refused.stderr
