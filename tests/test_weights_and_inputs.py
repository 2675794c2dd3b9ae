"""Weights files as people have them (BasicSR/RAM, DataParallel, files that do not fit), and inputs normalised
as the RAM authors' analysis sees them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import conv_net
from macattr import RankSettings, rank_layers
from macattr.cli import main
from macattr.weights import load_weights


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))


def test_basicsr_files_load_params_and_say_params_ema_is_there(tmp_path: Path) -> None:
    ema, plain = _net(), _net()
    with torch.no_grad():
        ema[0].weight.add_(1.0)
    path = tmp_path / "net_g.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)
    notes = []
    loaded = load_weights(_net(), path, note=notes.append)
    assert torch.equal(loaded[0].weight, plain[0].weight)
    assert len(notes) == 1 and "hold params and params_ema; loaded params" in notes[0] and "'params_ema'" in notes[0]
    assert torch.equal(load_weights(_net(), path, key="params_ema", note=notes.append)[0].weight, ema[0].weight)
    torch.save({"net_g": plain.state_dict()}, tmp_path / "g.pth")
    assert torch.equal(load_weights(_net(), tmp_path / "g.pth")[2].bias, plain[2].bias)
    with pytest.raises(ValueError, match=r"no state dict under key 'params_x'; their keys are \['params', 'params_ema"):
        load_weights(_net(), path, key="params_x")


def test_prefixes_are_stripped_with_a_note_and_mismatches_named(tmp_path: Path) -> None:
    state = _net().state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    notes = []
    load_weights(_net(), tmp_path / "dp.pth", note=notes.append)
    assert notes == [f"weights {tmp_path / 'dp.pth'}: the prefix 'module.' of every key was stripped"]
    partial = {k: v for k, v in state.items() if not k.startswith("2.")} | {"extra.weight": torch.zeros(1)}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"2 missing \(first: 2.weight, 2.bias\), 1 unexpected \(first: extra") as bad:
        load_weights(_net(), tmp_path / "partial.pth")
    assert "key=" not in str(bad.value)  # no state dict in the file to pick with key=
    torch.save({"epoch": 3, "net": state}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match=r"key= \(--weights-key\) to load one of the state dicts it holds \(net\)"):
        load_weights(_net(), tmp_path / "nested.pth")
    target = _net()
    with torch.no_grad():
        target[2].weight.zero_()
    load_weights(target, tmp_path / "partial.pth", strict=False, note=notes.append)
    assert "loaded 2 of the model's 4 tensors; left out 2 missing" in notes[-1]
    assert float(target[2].weight.abs().sum()) == 0  # left as it was
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3)).state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"tensor '0.weight' is \(8, 3, 3, 3\) in the file, \(4, 3, 3, 3\) in the"):
        load_weights(_net(), tmp_path / "other.pth", strict=False)


def test_notes_point_at_the_callers_line(tmp_path: Path) -> None:
    torch.save({"params": _net().state_dict(), "params_ema": _net().state_dict()}, tmp_path / "both.pth")
    with pytest.warns(UserWarning, match="hold params and params_ema") as notes:
        load_weights(_net(), tmp_path / "both.pth")
    assert notes[0].filename == __file__


def test_the_command_takes_a_weights_key_and_non_strict_files(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "nets.py").write_text("import torch\nfrom torch import nn\ndef build():\n    torch.manual_seed(0)\n"
                                      "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), "
                                      "nn.Conv2d(4, 3, 3, padding=1))\n")  # fmt: skip
    (tmp_path / "data.py").write_text("import torch\ndef batches():\n    return [torch.rand(1, 3, 8, 8)]\n")
    state = _net().state_dict()
    torch.save({"params": state, "params_ema": state}, tmp_path / "both.pth")
    torch.save({k: v for k, v in state.items() if k != "2.bias"}, tmp_path / "partial.pth")
    monkeypatch.chdir(tmp_path)
    common = ["rank", "--model", "nets:build", "--loader", "data:batches", "--n-steps", "2", "--no-progress"]
    assert main([*common, "--weights", "both.pth"]) == 0
    assert "macattr: note: weights both.pth hold params and params_ema; loaded params" in capsys.readouterr().err
    assert main([*common, "--weights", "both.pth", "--weights-key", "params_ema"]) == 0
    assert main([*common, "--weights", "partial.pth"]) == 2
    assert "1 missing (first: 2.bias)" in capsys.readouterr().err
    assert main([*common, "--weights", "partial.pth", "--non-strict"]) == 0
    assert "left out 1 missing (first: 2.bias)" in capsys.readouterr().err


def test_normalised_inputs_are_the_ones_the_model_sees_and_the_baseline_stays_zero() -> None:
    model = conv_net(0)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).reshape(1, 3, 1, 1)
    by_hand = (x - mean) / std
    normalised = rank_layers(model, [x], normalize="imagenet", n_steps=4, seed=0, progress=False)
    direct = rank_layers(model, [by_hand], n_steps=4, seed=0, progress=False)
    assert dict(normalised) == pytest.approx(dict(direct), rel=1e-12)
    assert normalised.config["normalize"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    y = torch.rand(2, 3, 6, 6, dtype=torch.float64)  # the ground truth is compared as it is
    truth = rank_layers(model, [(x, y)], "gradnorm", normalize=((0.5,) * 3, (0.25,) * 3), progress=False)
    assert dict(truth) == pytest.approx(dict(rank_layers(model, [((x - 0.5) / 0.25, y)], "gradnorm", progress=False)))
    for bad, error in [("sRGB", ValueError), (((0.5, 0.5), (0.2,)), ValueError), (((0.5,), (0.0,)), ValueError),
                       (3, TypeError)]:  # fmt: skip
        with pytest.raises(error, match="normalize"):
            RankSettings(normalize=bad)
    with pytest.raises(ValueError, match=r"normalize gives 3 channel\(s\) .* one mean and one standard deviation per"):
        rank_layers(nn.Sequential(nn.Conv2d(1, 1, 1)), [torch.rand(1, 1, 4, 4)], normalize="imagenet", n_steps=2,
                    progress=False)  # fmt: skip
