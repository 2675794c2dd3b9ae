"""Round two of the ways a ranking could look right and be wrong: checkpoints of other weights or functions,
budgets that forget frozen parameters, image files read at the wrong depth, weights that did not load, and
outputs that do not go where asked. Each test failed before the fix it guards."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import conv_net
from macattr import LayerScores, rank_layers
from macattr.restoration import write_ram_files


def _images(seed: int, n: int = 4, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(autouse=True)
def _quiet_certificates():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="rank_layers: estimated error", category=UserWarning)
        yield


@pytest.fixture
def command(tmp_path: Path, monkeypatch):
    """Run ``macattr rank`` on a tiny network and one image in ``tmp_path``: argv tail → (exit code, stderr)."""
    import sys

    from macattr.cli import main
    from macattr.restoration.images import sample_images, save_image

    monkeypatch.delitem(sys.modules, "counted_factory", raising=False)
    (tmp_path / "counted_factory.py").write_text("import torch\nfrom torch import nn\ncalls = []\ndef build():\n"
                                     "    calls.append(1)\n    torch.manual_seed(0)\n"
                                     "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), "
                                     "nn.Conv2d(4, 3, 3, padding=1))\n")  # fmt: skip
    (tmp_path / "images").mkdir()
    save_image(tmp_path / "images" / "a.png", sample_images(16)[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def run(*extra: str) -> int:
        return main(["rank", "--model", "counted_factory:build", "--images", "images", "--n-steps", "2",
                     "--no-progress", *extra])  # fmt: skip

    return run


# checkpoints ----------------------------------------------------------------------------------------------------


def test_a_checkpoint_of_other_weights_is_refused_finished_or_partial(tmp_path: Path) -> None:
    kwargs = dict(n_steps=4, seed=0, progress=False, checkpoint=tmp_path / "ck.json")
    first = rank_layers(conv_net(0), [_images(0)], **kwargs)
    with pytest.raises(ValueError, match="written for other weights or functions.*weights_sha256"):
        rank_layers(conv_net(1), [_images(0)], **kwargs)  # the same architecture, other weights
    again = rank_layers(conv_net(0), [_images(0)], **kwargs)
    assert dict(again) == dict(first)

    class Interrupted(Exception):
        pass

    def two_then_stop():
        yield _images(0)[:2]
        raise Interrupted

    partial = dict(kwargs, checkpoint=tmp_path / "partial.json")
    with pytest.raises(Interrupted):
        rank_layers(conv_net(0), two_then_stop(), **partial)
    with pytest.raises(ValueError, match="other weights or functions"):
        rank_layers(conv_net(1), [_images(0)], **partial)


def test_two_lambda_targets_of_one_name_do_not_share_a_checkpoint(tmp_path: Path) -> None:
    kwargs = dict(n_steps=4, seed=0, progress=False, checkpoint=tmp_path / "ck.json")
    rank_layers(conv_net(0), [_images(0)], target=lambda out: out.sum(dim=(1, 2, 3)), **kwargs)
    with pytest.raises(ValueError, match="other weights or functions.*target"):
        rank_layers(conv_net(0), [_images(0)], target=lambda out: out.mean(dim=(1, 2, 3)), **kwargs)


# budgets in parameters ------------------------------------------------------------------------------------------


def test_a_budget_in_parameters_counts_frozen_layers_as_what_fine_tuning_them_trains() -> None:
    from torch import nn

    from macattr import freeze_except

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 40, 3, padding=1), nn.Tanh(), nn.Conv2d(40, 3, 1)).double()
    model[0].requires_grad_(False)  # the layer holding most of the weights is frozen now
    scores = rank_layers(model, [_images(0)], n_steps=4, seed=0, progress=False)
    assert scores.parameters == {"0": 1120, "2": 123} and scores.model_parameters == 1243
    chosen = scores.top_k(0.5, budget="parameters")
    assert "0" not in chosen  # 90 % of the parameters does not fit a 50 % budget, frozen or not
    with freeze_except(model, chosen) as trainable:
        assert trainable.fraction == pytest.approx(scores.share(chosen)) and trainable.fraction <= 0.5
    model.requires_grad_(False)  # everything frozen: the budget still means what fine-tuning trains
    frozen = rank_layers(model, [_images(0)], n_steps=4, seed=0, progress=False)
    assert frozen.model_parameters == 1243 and frozen.share(["0", "2"]) == 1.0
    assert frozen.top_k(0.1, budget="parameters") == [] or frozen.share(frozen.top_k(0.1, "parameters")) <= 0.1


# image files as they are ----------------------------------------------------------------------------------------


def test_sixteen_bit_and_float_files_keep_their_values_and_grey_files_their_channel(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from macattr.restoration.images import read_image

    ramp = np.arange(64, dtype=np.float64).reshape(8, 8) / 63.0
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "float.tif")
    Image.fromarray((ramp * 4).astype(np.float32), mode="F").save(tmp_path / "bright.tif")
    for name in ("deep.png", "float.tif"):
        grey = read_image(tmp_path / name, channels=1)
        assert grey.shape == (1, 8, 8) and float((grey[0].double() - torch.from_numpy(ramp)).abs().max()) < 1e-4, name
        rgb = read_image(tmp_path / name)
        assert rgb.shape == (3, 8, 8) and torch.equal(rgb[0], rgb[2]) and torch.equal(rgb[0], grey[0]), name
    with pytest.raises(ValueError, match=r"bright.tif holds floats in \[0, 4\]; .* must lie in \[0, 1\]"):
        read_image(tmp_path / "bright.tif")
    with pytest.raises(ValueError, match="channels must be 1 \\(grey\\) or 3 \\(RGB\\)"):
        read_image(tmp_path / "deep.png", channels=2)
    with pytest.raises(ValueError, match="is a folder"):
        read_image(tmp_path)


def test_a_grey_model_is_ranked_from_a_folder_of_sixteen_bit_images(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    import numpy as np
    from PIL import Image

    from macattr.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        values = np.random.default_rng(i).integers(0, 4096, size=(8, 8)).astype(np.uint16)  # 12-bit data
        Image.fromarray(values).save(images / f"{i}.png")
    (tmp_path / "grey.py").write_text("import torch\nfrom torch import nn\ndef build():\n    torch.manual_seed(0)\n"
                                      "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), "
                                      "nn.Conv2d(4, 1, 3, padding=1))\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["rank", "--model", "grey:build", "--images", "images", "--channels", "1", "--n-steps", "4",
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "scores.json").read_text())["images"] == 2


# weights that did not load --------------------------------------------------------------------------------------


def test_weights_that_would_not_load_leave_the_model_as_it_was(tmp_path: Path) -> None:
    from torch import nn

    from macattr.weights import load_weights

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))

    trained = fresh()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    state = trained.state_dict()
    torch.save({"x.weight": torch.ones(2)}, tmp_path / "other.pth")
    for strict in (True, False):
        with pytest.raises(ValueError, match="none of the file's 1 entries is one of the model's 4 tensors"):
            load_weights(fresh(), tmp_path / "other.pth", strict=strict)
    torch.save({**state, "2.bias": 7}, tmp_path / "odd.pth")
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="hold int values, not tensors.*nothing was loaded"):
        load_weights(model, tmp_path / "odd.pth", strict=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.save({f"_orig_mod.module.{k}": v for k, v in state.items()}, tmp_path / "wrapped.pth")
    torch.save({"state_dict": {"model": state}, "epoch": 3}, tmp_path / "twice.pth")
    torch.save({"state_dict": {"model": state, "ema": state}, "epoch": 3}, tmp_path / "choice.pth")
    for name, key in (("wrapped.pth", None), ("twice.pth", None), ("twice.pth", "model"),
                      ("choice.pth", "state_dict.ema"), ("choice.pth", "model")):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_weights(fresh(), tmp_path / name, key=key)
        assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items()), (name, key)
    with pytest.raises(ValueError, match="is a folder"):
        load_weights(fresh(), tmp_path)


def test_the_command_refuses_non_strict_weights_that_fit_nothing(command, tmp_path: Path, capsys) -> None:
    torch.save({"encoder.weight": torch.ones(3)}, tmp_path / "w.pth")
    assert command("--weights", "w.pth", "--non-strict") == 2
    assert "none of the file's 1 entries" in capsys.readouterr().err
    assert not (tmp_path / "scores.json").exists()


def test_a_model_whose_layers_mostly_score_zero_is_named() -> None:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 3, 1))
    model = model.double()
    with torch.no_grad():
        model[1].weight.zero_()  # zero-initialised, as in untrained restoration networks: nothing gets through
    with pytest.warns(UserWarning, match=r"4 of 4 layers score exactly 0 \(first: 0, 1, 2\).*weights were loaded"):
        rank_layers(model, [_images(0)], n_steps=2, progress=False)


# outputs --------------------------------------------------------------------------------------------------------


def test_outputs_are_regular_files_checked_before_the_analysis(command, tmp_path: Path, capsys) -> None:
    import os

    import counted_factory  # the model factory of the fixture: it records each call

    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file.txt").write_text("x")
    refusals = [
        (["--out", "folder"], "--out folder must end in .json"),
        (["--out", "folder.json"], None),
        (["--out", "pipe.json"], None),
        (["--out", "scores.csv"], "--out scores.csv must end in .json"),
        (["--ram-files", "file.txt"], "--ram-files file.txt is a file; name a folder"),
        (["--checkpoint", "folder"], "--checkpoint folder is a folder"),
    ]
    (tmp_path / "folder.json").mkdir()
    os.mkfifo(tmp_path / "pipe.json")
    refusals[1] = (["--out", "folder.json"], "--out folder.json is a folder; name a file in it")
    refusals[2] = (["--out", "pipe.json"], "--out pipe.json is not a regular file")
    for extra, message in refusals:
        counted_factory.calls.clear()
        assert command(*extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert counted_factory.calls == [], extra  # refused before the model was built
    assert (tmp_path / "pipe").exists() and not (tmp_path / "pipe").is_file()


def test_a_symlinked_output_updates_its_target_and_leaves_no_lock(command, tmp_path: Path, capsys) -> None:
    import json
    import os

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "real.json").write_text("{}")
    os.symlink(tmp_path / "runs" / "real.json", tmp_path / "latest.json")
    assert command("--out", "latest.json", "--ram-files", "ram") == 0
    assert (tmp_path / "latest.json").is_symlink()
    assert json.loads((tmp_path / "runs" / "real.json").read_text())["method"] == "mac"
    leftovers = sorted(p.name for p in tmp_path.rglob(".*") if p.suffix in (".lock", ".staged", ".tmp"))
    assert leftovers == []


def test_a_write_that_fails_is_one_line_naming_the_file(command, monkeypatch, capsys) -> None:
    import errno
    import os

    real_replace = os.replace

    def full_disk(source, target):
        if str(target).endswith("scores.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", full_disk)
    assert command() == 1
    err = capsys.readouterr().err.strip()
    assert err == "macattr: error: cannot write scores.json: No space left on device"


# the models people bring ----------------------------------------------------------------------------------------


class _Conditioned(torch.nn.Module):
    """An image model with a timestep and a per-sample mask among its keyword arguments (a diffusion UNet's
    signature): the output depends on both."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.time = torch.nn.Linear(1, 4)
        self.out = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x) + self.time(timestep.reshape(-1, 1).to(x.dtype))[..., None, None])
        return self.out(h) * mask[:, None, None, None]


def _conditioned_direct(model, x, timestep, mask, n_steps) -> dict:
    """The same ranking with the keyword arguments bound by hand, all images in one batch."""
    return dict(rank_layers(_Bound(model, timestep, mask), [x], n_steps=n_steps, seed=0, progress=False))


class _Bound(torch.nn.Module):
    def __init__(self, model, timestep, mask) -> None:
        super().__init__()
        self.model, self.timestep, self.mask = model, timestep, mask

    def forward(self, x):
        whole = len(x) % len(self.mask) == 0  # every grid point of every image, or the first images alone
        mask = self.mask.repeat(len(x) // len(self.mask)) if whole else self.mask[: len(x)]
        return self.model(x, timestep=self.timestep, mask=mask)


def test_forward_kwargs_constant_and_per_batch_reach_every_call() -> None:
    model = _Conditioned().double()
    x = _images(0, n=3)
    mask = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    batches = [{"input": x[:2], "mask": mask[:2]}, {"input": x[2:], "mask": mask[2:]}]
    timestep = torch.tensor(7.0)
    scores = rank_layers(model, batches, n_steps=6, seed=0, progress=False,
                         forward_kwargs=lambda batch: {"timestep": timestep, "mask": batch["mask"]})  # fmt: skip
    expected = _conditioned_direct(model, x, timestep, mask, 6)
    assert scores.names == ["conv", "out"] and "time" in scores.skipped  # its output (1, 4) does not follow the batch
    for name in ("conv", "out"):
        assert scores[name] == pytest.approx(expected[f"model.{name}"], rel=1e-10)
    with pytest.raises(TypeError, match="forward_kwargs must be a dict"):
        rank_layers(model, batches, n_steps=2, progress=False, forward_kwargs=[("timestep", 1)])
    constant = rank_layers(model, [x], n_steps=6, seed=0, progress=False,
                           forward_kwargs={"timestep": timestep, "mask": mask})  # fmt: skip
    assert constant["conv"] == pytest.approx(expected["model.conv"], rel=1e-10)


def test_a_causal_lm_is_ranked_by_each_sequence_s_own_next_token() -> None:
    from bench_networks import tiny_llama
    from macattr.baselines import token_embedding

    model = tiny_llama(hidden=32, layers=2, vocab=64)
    ids = torch.randint(1, 64, (3, 9), generator=torch.Generator().manual_seed(0))
    embeddings = model.get_input_embeddings()(ids[:, :8]).detach()
    labels = torch.stack([torch.full((3,), 7), ids[:, 8]], dim=1)  # (position, next token) per sequence
    options = dict(input_name="inputs_embeds", mask_dims="sequence", n_steps=8, seed=0, progress=False,
                   baselines=token_embedding(model, 0))  # fmt: skip
    ours = rank_layers(model, [(embeddings, labels)], target="label", **options)
    tokens = ids[:, 8]

    def own_next_token(logits: torch.Tensor) -> torch.Tensor:  # (R, T, V), R = grid points × 3, step-major
        return logits[torch.arange(len(logits)), 7, tokens.repeat(len(logits) // 3)]

    reference = rank_layers(model, [embeddings], target=own_next_token, **options)
    assert ours.names == reference.names and len(ours.names) >= 10
    for name in ours.names:
        assert ours[name] == pytest.approx(reference[name], rel=1e-10), name
    with pytest.raises(TypeError, match=r"class indices \(N,\) or index rows \(N, k\)"):
        rank_layers(model, [(embeddings, labels.double())], target="label", **options)


def test_the_command_excludes_layers_and_masks_tokens(tmp_path: Path, monkeypatch, capsys) -> None:
    import json
    import sys

    from macattr.cli import main

    monkeypatch.delitem(sys.modules, "sequence_factory", raising=False)
    (tmp_path / "sequence_factory.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))\n"
        "def batches():\n    return [torch.rand(2, 5, 8, generator=torch.Generator().manual_seed(0))]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["rank", "--model", "sequence_factory:build", "--loader", "sequence_factory:batches", "--n-steps", "4",
              "--no-progress", "--target", "sum", "--mask-dims", "sequence"]  # fmt: skip
    assert main([*common, "--exclude", r"^4$"]) == 0
    document = json.loads((tmp_path / "scores.json").read_text())
    assert sorted(entry["name"] for entry in document["layers"]) == ["0", "2"]
    assert document["config"]["path"]["mask_dims"] == "sequence"
    by_position = [*common[: common.index("--target")], "--target", "4,0", "--mask-dims", "sequence"]
    assert main([*by_position, "--out", "position.json"]) == 0  # the output of position 4
    assert json.loads((tmp_path / "position.json").read_text())["config"]["target"] == [4, 0]
    with pytest.raises(SystemExit) as exit:  # argparse's own error, before anything runs
        main([*common, "--exclude", "(unclosed"])
    assert exit.value.code == 2
    assert "not a regular expression" in capsys.readouterr().err


class _Positions(torch.nn.Module):
    """Whisper's layout: a position table (T, D) added to every sequence, then a projection."""

    def __init__(self, length: int = 4, width: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed_positions = torch.nn.Embedding(length, width)
        self.proj = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = self.embed_positions(torch.arange(x.shape[1]))  # (T, D): the same for every sample
        return self.proj(torch.tanh(x + positions)).sum(dim=(1, 2))


def test_a_position_table_without_a_batch_dimension_is_skipped_not_fatal() -> None:
    x = torch.rand(3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"embed_positions: its output does not follow the batch \(forward passes "
                      r"of 2 and 3 samples gave it 4 and 4 rows\)"):  # fmt: skip
        scores = rank_layers(_Positions().double(), [x], mask_dims="sequence", target="sum", n_steps=4, progress=False)
    assert scores.names == ["proj"]


def test_a_weight_norm_layer_is_one_candidate_that_counts_and_trains_its_parametrised_weight() -> None:
    from torch import nn
    from torch.nn.utils.parametrizations import weight_norm

    from macattr import freeze_except

    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Conv1d(4, 4, 3, padding=1)), nn.Tanh(), nn.Conv1d(4, 1, 1)).double()
    x = torch.rand(2, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing skipped
        warnings.filterwarnings("ignore", message="rank_layers: estimated error")
        scores = rank_layers(model, [x], mask_dims=(2,), target="sum", n_steps=4, progress=False)
    assert scores.names == ["0", "2"] and scores.skipped == {}
    assert scores.parameters == {"0": 4 + 4 + 48, "2": 5} and scores.model_parameters == 61  # bias, g, v; head
    with freeze_except(model, ["0"]) as trainable:
        assert trainable.trainable == 56 and trainable.fraction == pytest.approx(scores.share(["0"]))


def test_lora_configs_of_linear_blocks_and_of_linear_list_elements_and_bad_ranks() -> None:
    import peft
    from torch import nn

    from macattr import LayerScores
    from macattr.peft import lora_config

    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)) for _ in range(3))
            self.heads = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block, head in zip(self.h, self.heads):
                x = head(block(x))
            return x

    torch.manual_seed(0)
    model = Blocks()
    blocks = lora_config(LayerScores({"h.0": 2.0, "h.2": 1.0}, "mac"), model, r=2)
    assert blocks.blocks == [0, 2] and blocks.config.fan_in_fan_out is False  # nn.Linear stores W as (out, in)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT would warn if fan_in_fan_out were wrong
        wrapped = peft.get_peft_model(model, blocks.config)
    assert wrapped.get_nb_trainable_parameters()[0] == 2 * 2 * (2 * 8 * 2)  # 2 blocks × 2 layers × (A + B)
    elements = lora_config(LayerScores({"heads.1": 2.0, "heads.2": 1.0}, "mac"), Blocks(), r=2)
    assert elements.targets == ["heads.1", "heads.2"] and elements.blocks is None
    for bad in (2.5, 0, True):
        with pytest.raises((TypeError, ValueError), match="r must be an integer >= 1"):
            lora_config(["heads.1"], Blocks(), r=bad)
    with pytest.raises(ValueError, match="lora_alpha"):
        lora_config(["heads.1"], Blocks(), lora_alpha=-1)


def test_a_failed_rank_leaves_no_folder_it_made_and_debug_goes_after_the_subcommand(
    command, tmp_path: Path, capsys
) -> None:
    (tmp_path / "kept").mkdir()  # a folder that was there before stays, even empty
    code = command("--out", "kept/new/deeper/scores.json", "--ram-files", "ram", "--weights", "missing.pth")
    assert code == 2 and "missing.pth does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["images", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []
    assert command("--weights", "missing.pth", "--debug") == 2
    assert "Traceback" in capsys.readouterr().err


def test_layers_that_see_only_the_timestep_score_exactly_zero() -> None:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few steps: the certificate's warning is not what this test reads
        scores = rank_layers(unet, [torch.rand(2, 3, 16, 16)], output="sample", forward_kwargs={"timestep": 10},
                             rule="trapezoid", n_steps=8, seed=0, progress=False)  # fmt: skip
    timed = [name for name in scores if "time_emb" in name or name.startswith("time_embedding")]
    assert len(timed) == 10 and all(scores[name] == 0.0 and scores.error(name) == 0.0 for name in timed)
    seeing = [value for name, value in scores.items() if name not in timed]
    assert min(seeing) > 1e-4 * max(seeing)  # every layer that sees the input scores far above rounding
    # a per-sample timestep: the time layer follows the batch, and still scores exactly 0
    with_time = _Conditioned().double()
    ranked = rank_layers(with_time, [_images(0, n=2)], n_steps=6, seed=0, progress=False,
                         forward_kwargs={"timestep": torch.tensor([3.0, 3.0]), "mask": torch.ones(2)})  # fmt: skip
    assert ranked["time"] == 0.0 and ranked["conv"] > 0.0 and ranked["out"] > 0.0


def test_a_checkpoint_refuses_to_resume_with_the_images_grouped_by_another_key(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    batches = [{"lq": images[i : i + 2], "task": ["a", "b"], "source": ["x", "x"]} for i in range(0, 8, 2)]
    options = dict(n_steps=3, progress=False, samples_per_group=2, checkpoint=tmp_path / "run.ckpt.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = rank_layers(model, batches, group="task", **options)
        with pytest.raises(ValueError, match="group: task -> source"):
            rank_layers(model, batches, group="source", **options)  # 4 images by task, not 2 by source
        assert rank_layers(model, batches, group="task", **options).images == first.images == 4


def test_scores_files_edited_into_nonsense_are_refused_by_name(tmp_path: Path) -> None:
    def document(layers: list, **extra: object) -> Path:
        path = tmp_path / "edited.json"
        path.write_text(json.dumps({"method": "mac", "layers": layers, **extra}))
        return path

    twice = [{"name": "a", "score": 0.9, "index": 0}, {"name": "b", "score": 0.5, "index": 1},
             {"name": "a", "score": 0.1, "index": 2}]  # fmt: skip
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        LayerScores.load(document(twice))
    negative = [{"name": "a", "score": 3.0, "index": 0, "parameters": -1000},
                {"name": "b", "score": 2.0, "index": 1, "parameters": 600}]  # fmt: skip
    with pytest.raises(ValueError, match=r"parameter counts must be >= 0; negative for \['a'\]"):
        LayerScores.load(document(negative, model_parameters=1000))
    with pytest.raises(ValueError, match=r"scores must be numbers; not numbers for \['a'\]"):
        LayerScores.load(document([{"name": "a", "score": "0.9", "index": 0}]))
    with pytest.raises(ValueError, match="scores must be numbers"):
        LayerScores({"a": True}, "mac")
    with pytest.raises(ValueError, match="images must be a count >= 0, got -5"):
        LayerScores.load(document([{"name": "a", "score": 0.9, "index": 0}], images=-5))


def test_ram_files_refuse_a_layer_name_that_holds_a_line_break(tmp_path: Path) -> None:
    scores = LayerScores({"conv\nhead": 0.5, "tail": 0.9}, "mac")
    with pytest.raises(ValueError, match="hold a line break"):
        write_ram_files(scores, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_first_batch_a_missing_group_key_and_too_many_units_are_refused_by_name() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"first batch holds no samples \(input shape \(0, 3, 8, 8\)\)"):
        rank_layers(model, [x[:0], x], n_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"group='tsak' must be a key of each batch .* \['lq', 'task'\]"):
        rank_layers(model, [{"lq": x, "task": ["a", "b"]}], n_steps=2, progress=False, group="tsak",
                    samples_per_group=1)  # fmt: skip
    tied = LayerScores({"a": 1.0, "b": 1.0, "c": 0.5}, "mac")
    with pytest.raises(ValueError, match=r"3 layers make 2 units .*pass a k in \[1, 2\]$"):
        tied.top_k(4)


def test_a_model_that_cannot_take_the_input_is_one_line_naming_its_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    with pytest.raises(ValueError, match=r"forward pass fails on the loader's first batch: RuntimeError: .*3 channels"):
        rank_layers(model, [torch.rand(2, 1, 12, 12)], n_steps=2, progress=False)
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in model.modules())
