"""Each way a ranking could look right and be wrong: it gives the right answer or stops with the cause named.

Stale and edited checkpoints, two runs on one file, gradient checkpointing, compiled models, inference mode and
meta tensors, input dtypes, processes that hold different models, and the command's messages.
"""

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
from torch.utils.checkpoint import checkpoint

import macattr
from conftest import conv_net
from macattr import LayerMAC, LayerScores, rank_layers, targets
from macattr.cli import main
from macattr.commands import load_model
from macattr.files import FileInUse, exclusive, lock_path


def _images(seed: int, n: int = 4, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# 1, 2: checkpoints ---------------------------------------------------------------------------------------------


class Counting(nn.Module):
    """A conv net that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.calls = conv_net(0), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_a_finished_checkpoint_is_checked_against_the_images_and_costs_no_attribution(tmp_path: Path) -> None:
    images_a, images_b = _images(0), _images(1)
    kwargs = dict(n_steps=6, seed=0, progress=False, checkpoint=tmp_path / "ck.json")
    model = Counting()
    first = rank_layers(model, [images_a[:2], images_a[2:]], **kwargs)
    with pytest.raises(ValueError, match="other images than the checkpoint"):
        rank_layers(model, [images_b], **kwargs)
    with pytest.raises(ValueError, match="more images than the 4 of the finished checkpoint"):
        rank_layers(model, [images_a, images_b[:1]], **kwargs)
    with pytest.raises(ValueError, match="fewer than the 4"):
        rank_layers(model, [images_a[:3]], **kwargs)
    model.calls = 0
    again = rank_layers(model, [images_a], **kwargs)  # the same images in other batches: reused
    assert dict(again) == dict(first) and again.images == 4
    assert model.calls == 2  # two forward passes (2 and 3 samples) to order the layers; no attribution


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["scores"].update(sums=[10 * s for s in d["scores"]["sums"]]),
        lambda d: d["scores"].update(images=15),
        lambda d: d.update(samples=d["samples"] + 1),
        lambda d: d.pop("content_sha256"),
    ],
)
def test_a_checkpoint_edited_by_hand_is_refused_by_name(tmp_path: Path, edit) -> None:
    path = tmp_path / "ck.json"
    kwargs = dict(n_steps=4, seed=0, progress=False, checkpoint=path)
    rank_layers(conv_net(0), [_images(0)], **kwargs)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=f"checkpoint {path}"):
        rank_layers(conv_net(0), [_images(0)], **kwargs)


# 3: one run at a time ------------------------------------------------------------------------------------------


def _holder(path: Path) -> subprocess.Popen:
    """A process that holds the exclusive use of ``path`` until it is stopped."""
    code = (f"import sys, time\nfrom macattr.files import exclusive\nwith exclusive({str(path)!r}):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_the_same_checkpoint_or_output_is_told_which_process_holds_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "nets.py").write_text("from torch import nn\ndef build():\n    return nn.Conv2d(3, 3, 3, padding=1)\n")
    (tmp_path / "data.py").write_text("import torch\ndef batches():\n    return [torch.rand(1, 3, 8, 8)]\n")
    holder = _holder(tmp_path / "scores.json")
    try:
        previous = os.getcwd()
        os.chdir(tmp_path)
        try:
            status = main(["rank", "--model", "nets:build", "--loader", "data:batches", "--n-steps", "2",
                           "--out", "scores.json", "--no-progress"])  # fmt: skip
        finally:
            os.chdir(previous)
        error = capsys.readouterr().err
        assert status == 2 and f"output file scores.json is in use by process {holder.pid}" in error
        assert not (tmp_path / "scores.json").exists()
    finally:
        holder.terminate()
        holder.wait()
    held = _holder(tmp_path / "ck.json")
    try:
        with pytest.raises(FileInUse, match=f"checkpoint {tmp_path / 'ck.json'} is in use by process {held.pid}"):
            rank_layers(conv_net(0), [_images(0)], n_steps=2, progress=False, checkpoint=tmp_path / "ck.json")
    finally:
        held.kill()  # a process that dies releases its lock: the lock file left behind is stale ...
        held.wait()
    assert str(held.pid) in lock_path(tmp_path / "ck.json").read_text()
    scores = rank_layers(conv_net(0), [_images(0)], n_steps=2, progress=False, checkpoint=tmp_path / "ck.json")
    assert scores.images == 4  # ... and recognised as such


def test_the_lock_is_released_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    with pytest.raises(RuntimeError, match="inside"):
        with exclusive(path):
            raise RuntimeError("inside")
    with exclusive(path):
        pass


# 4: gradient checkpointing -------------------------------------------------------------------------------------


class Checkpointed(nn.Module):
    """Conv head, a residual block run through torch.utils.checkpoint (or not: ``reentrant=None``), conv tail."""

    def __init__(self, reentrant, no_grad_block: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 1))
        self.tail = nn.Conv2d(6, 3, 3, padding=1)
        self.reentrant, self.no_grad_block = reentrant, no_grad_block
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        if self.no_grad_block:
            with torch.no_grad():
                inner = self.block(h)
            return self.tail(h + inner)
        if self.reentrant is None:
            return self.tail(h + self.block(h))
        return self.tail(h + checkpoint(self.block, h, use_reentrant=self.reentrant))


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_gives_the_attributions_of_the_plain_model(reentrant: bool) -> None:
    x = _images(2, size=8)
    plain = rank_layers(Checkpointed(None), [x], n_steps=8, seed=0, progress=False)
    model = Checkpointed(reentrant)
    for parameter in model.parameters():  # the user's own gradients, kept through the ranking
        parameter.grad = torch.full_like(parameter, 0.13)
    grads = [p.grad for p in model.parameters()]
    checked = rank_layers(model, [x], n_steps=8, seed=0, progress=False)
    assert all(p.grad is g and bool((g == 0.13).all()) for p, g in zip(model.parameters(), grads))
    assert checked.names == plain.names and min(checked.values()) > 0
    torch.testing.assert_close(list(checked.values()), list(plain.values()), rtol=1e-6, atol=0)
    layers = [model.block[0], model.tail]
    a = LayerMAC(targets.gradient_magnitude(model), layers).attribute(x, n_steps=8, seed=0)
    reference = Checkpointed(None)
    b = LayerMAC(targets.gradient_magnitude(reference), [reference.block[0], reference.tail]).attribute(
        x, n_steps=8, seed=0
    )
    for mine, theirs in zip(a, b):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-12)
    assert all(p.grad is g and bool((g == 0.13).all()) for p, g in zip(model.parameters(), grads))  # put back


def test_a_layer_run_without_autograd_is_refused_with_the_switch_that_fixes_it() -> None:
    with pytest.raises(ValueError, match=r"layer \['block.0', 'block.2'\] ran without autograd"):
        rank_layers(Checkpointed(None, no_grad_block=True), [_images(2, size=8)], n_steps=2, progress=False)


def test_hugging_face_gradient_checkpointing_gives_the_plain_attributions() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(config).double()

    class OnEmbeddings(nn.Module):
        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, e: torch.Tensor) -> torch.Tensor:
            return self.bert(inputs_embeds=e).last_hidden_state[:, 0].sum(1)

    wrapped = OnEmbeddings(model).train()  # Hugging Face checkpoints only in train mode (no dropout here)
    embeddings = torch.rand(2, 6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blocks = [model.encoder.layer[0], model.encoder.layer[1].attention.output.dense]

    def attribute() -> list:
        mac = LayerMAC(wrapped, blocks, train_mode=True)
        return mac.attribute(embeddings, n_steps=6, seed=0, mask_dims="sequence", internal_batch_size=2)

    plain = attribute()
    for reentrant in (True, False):  # transformers 5 names it activation checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
        try:
            checked = attribute()
        finally:
            model.activation_checkpointing_disable()
        for a, b in zip(checked, plain):
            a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
            assert float(b.abs().max()) > 0
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


# 5: compiled models --------------------------------------------------------------------------------------------


def test_a_compiled_model_gives_the_eager_scores_and_says_so_once() -> None:
    model, x = conv_net(3).float(), _images(3).float()
    eager = rank_layers(model, [x], n_steps=4, seed=0, progress=False)
    compiled = torch.compile(model)
    with pytest.warns(UserWarning, match="torch.compile'd: macattr attributes its original module") as caught:
        scores = rank_layers(compiled, [x], n_steps=4, seed=0, progress=False)
    assert len([w for w in caught if "torch.compile" in str(w.message)]) == 1
    assert dict(scores) == dict(eager) and list(macattr.candidate_layers(compiled)) == eager.names
    with macattr.freeze_except(compiled, scores.top_k(1)) as trainable:  # the names fit the compiled model
        assert trainable.names == scores.top_k(1)
    with pytest.warns(UserWarning, match="torch.compile"):
        mac = LayerMAC(targets.output_sum(compiled), model[0]).attribute(x, n_steps=4, seed=0)
    torch.testing.assert_close(mac, LayerMAC(targets.output_sum(model), model[0]).attribute(x, n_steps=4, seed=0))


# 6, 7: inference mode, meta tensors, dtypes --------------------------------------------------------------------


def test_inference_mode_and_meta_tensors_are_refused_with_the_fix() -> None:
    model, x = conv_net(0), _images(0)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="call outside torch.inference_mode()"):
            rank_layers(model, [x], n_steps=2, progress=False)
        with pytest.raises(RuntimeError, match="call outside torch.inference_mode()"):
            LayerMAC(targets.output_sum(model), model[0]).attribute(x, n_steps=2, seed=0)
        made_inside = x.clone()
    assert LayerMAC(targets.output_sum(model), model[0]).attribute(made_inside, n_steps=2, seed=0).shape[0] == 4
    with torch.device("meta"):
        empty = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    with pytest.raises(ValueError, match="'0.weight' .* is on the meta device"):
        rank_layers(empty, [x.float()], n_steps=2, progress=False)
    with torch.inference_mode():
        frozen = nn.Conv2d(3, 3, 3, padding=1)
    with pytest.raises(ValueError, match="made under torch.inference_mode"):
        rank_layers(nn.Sequential(frozen), [x.float()], n_steps=2, progress=False)


def test_integer_images_are_refused_and_floating_ones_take_the_models_dtype() -> None:
    model = conv_net(1).to(torch.bfloat16)
    with pytest.raises(TypeError, match=r"torch.uint8; .* \(x / 255 for uint8\); for token ids, rank on the embed"):
        rank_layers(model, [(_images(1) * 255).to(torch.uint8)], n_steps=2, progress=False)
    x = _images(1).float()
    cast = rank_layers(model, [x], n_steps=4, seed=0, progress=False)
    direct = rank_layers(model, [x.to(torch.bfloat16)], n_steps=4, seed=0, progress=False)
    assert dict(cast) == dict(direct)


# 8: processes that hold different models ----------------------------------------------------------------------


def _different_models(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # fmt: skip
    try:
        torch.manual_seed(rank)  # a factory without weights, seeded differently in each process
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        rank_layers(model, [torch.rand(1, 3, 8, 8) for _ in range(2)], n_steps=2, progress=False)
        (Path(folder) / f"rank{rank}.ok").write_text("ranked")
    except Exception as error:
        (Path(folder) / f"rank{rank}.error").write_text(f"{type(error).__name__}: {error}")
    finally:
        dist.destroy_process_group()


def test_processes_that_hold_different_weights_all_stop_naming_the_tensor(tmp_path: Path) -> None:
    started = time.monotonic()
    mp.spawn(_different_models, args=(str(tmp_path),), nprocs=2, join=True)
    assert time.monotonic() - started < 60
    for rank in (0, 1):
        error = (tmp_path / f"rank{rank}.error").read_text()
        assert "process 1 of 2 holds another model than process 0: its tensor '0.weight' differs" in error


def test_the_command_builds_a_weightless_model_the_same_in_every_process(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text("from torch import nn\ndef build():\n    return nn.Conv2d(3, 3, 3)\n")
    spec = f"{tmp_path / 'nets.py'}:build"
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = load_model(spec, None, seed=0), load_model(spec, None, seed=0)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, load_model(spec, None, seed=1).weight)
    torch.manual_seed(123)
    load_model(spec, None, seed=0)
    assert torch.equal(torch.rand(1), before)  # torch's global generator is left as it was


# 10: the command's messages ------------------------------------------------------------------------------------


def _command(argv: list, cwd: Path, capsys) -> tuple:
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
    finally:
        os.chdir(previous)
    captured = capsys.readouterr()
    return status, captured.err


def test_folders_and_unreadable_files_get_their_own_message(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "d.json").mkdir()
    status, error = _command(["plot", "d.json"], tmp_path, capsys)
    assert status == 2 and "d.json is a folder, not a scores file" in error
    scores = LayerScores({"a": 1.0, "b": 2.0}, "mac")
    scores.save(tmp_path / "locked.json")
    real = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self.name == "locked.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    status, error = _command(["plot", "locked.json"], tmp_path, capsys)
    assert status == 2 and "cannot read the scores file locked.json: permission denied" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_errors_that_are_not_the_users_input_keep_their_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.py").write_text(textwrap.dedent("""
        from torch import nn

        class Broken(nn.Conv2d):
            def forward(self, x):
                raise ValueError("the model's own bug")

        def build():
            return nn.Sequential(Broken(3, 3, 3))
    """))  # fmt: skip
    (tmp_path / "data.py").write_text("import torch\ndef batches():\n    return [torch.rand(1, 3, 8, 8)]\n")
    common = ["rank", "--model", "broken:build", "--loader", "data:batches", "--n-steps", "2", "--no-progress"]
    status, error = _command(common, tmp_path, capsys)
    assert status == 1 and "Traceback" in error and "the model's own bug" in error
    status, error = _command(["rank", "--model", "broken:build", "--loader", "data:batches", "--k", "9"], tmp_path,
                             capsys)  # fmt: skip
    assert status == 2 and error.startswith("macattr: error: k must be") and "Traceback" not in error
    status, error = _command(["--debug", "rank", "--model", "broken:build", "--loader", "data:batches", "--k", "9"],
                             tmp_path, capsys)  # fmt: skip
    assert status == 2 and "Traceback" in error and "macattr: error: k must be" in error


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    LayerScores({f"layer{i}": float(i) for i in range(30)}, "mac").save(tmp_path / "a.json")
    LayerScores({f"layer{i}": float(-i) for i in range(30)}, "ig").save(tmp_path / "b.json")
    process = subprocess.Popen(
        [sys.executable, "-m", "macattr", "compare", "a.json", "b.json", "--out", "c.png", "--top-k", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    process.stdout.close()  # the reader goes away before the command prints (as `| head` does)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr
