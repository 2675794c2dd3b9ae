"""The macattr command end to end, in a subprocess, with its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from macattr.restoration.images import sample_images, save_image


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "macattr.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "tinynet.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def build():
                torch.manual_seed(0)
                return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
            """
        )
    )
    namespace: dict = {}
    exec((root / "tinynet.py").read_text(), namespace)
    torch.save({"params": namespace["build"]().state_dict()}, root / "w.pth")
    images = root / "images"
    images.mkdir()
    for i, image in enumerate(sample_images(32)[:2]):
        save_image(images / f"im{i}.png", image)
    (root / "empty").mkdir()
    return root


def test_demo_writes_scores_heatmap_and_prints_top_k(workspace: Path) -> None:
    result = _run("demo", "--out", "out", "--pretrain-steps", "3", "--n-steps", "2", "--no-progress", cwd=workspace)
    assert result.returncode == 0, result.stderr
    out = workspace / "out"
    for name in ("scores.json", "heatmap.png", "bar.png", "scores.csv", "filter_name.txt"):
        assert (out / name).is_file()
    document = json.loads((out / "scores.json").read_text())
    top = [entry["name"] for entry in document["layers"][:4]]
    assert "top 4 of 34 layers" in result.stdout and all(name in result.stdout for name in top)


def test_rank_then_plot_and_compare(workspace: Path) -> None:
    common = ["--model", "tinynet:build", "--weights", "w.pth", "--images", "images", "--n-steps", "3"]
    result = _run("rank", *common, "--degrade", "noise:25,blur:2", "--k", "1", "--out", "s.json",
                  "--no-progress", "--ram-files", "ram", cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((workspace / "s.json").read_text())
    assert document["images"] == 4 and {e["name"] for e in document["layers"]} == {"0", "2"}
    assert (workspace / "ram" / "filter_index.txt").is_file()
    result = _run("rank", *common, "--method", "ig", "--out", "ig.json", "--no-progress", cwd=workspace)
    assert result.returncode == 0, result.stderr
    result = _run("rank", *common, "--method", "gradnorm", "--degrade", "noise:25", "--out", "g.json",
                  "--no-progress", cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "g.json").read_text())["method"] == "gradnorm"
    result = _run("plot", "s.json", "--out", "plots/h.png", "--top-k", "1", cwd=workspace)
    assert result.returncode == 0 and (workspace / "plots" / "h.png").stat().st_size > 1000
    result = _run("compare", "s.json", "ig.json", "--out", "cmp.png", "--top-k", "1", cwd=workspace)
    assert result.returncode == 0 and "Spearman" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["rank", "--model", "tinynet:build", "--weights", "missing.pth", "--images", "images"], "does not exist"),
        (["rank", "--model", "no_such_module:build", "--images", "images"], "cannot import"),
        (["rank", "--model", "tinynet", "--images", "images"], "package.module:factory"),
        (["rank", "--model", "tinynet:nothing", "--images", "images"], "no callable"),
        (["rank", "--model", "tinynet:build", "--images", "empty"], "holds no images"),
        (["rank", "--model", "tinynet:build", "--images", "nowhere"], "does not exist"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--k", "5", "--n-steps", "1"], "k must be"),
        (["plot", "missing.json"], "does not exist"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--method", "gradnorm"], "needs --degrade"),
        (["demo", "--k", "0"], "k must be"),
    ],
)
def test_errors_exit_non_zero_with_a_clear_message(workspace: Path, args: list, words: str) -> None:
    result = _run(*args, cwd=workspace)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_argument_errors(workspace: Path) -> None:
    result = _run("demo", "--k", "1.5", cwd=workspace)
    assert result.returncode == 2 and "k must be a fraction" in result.stderr
    result = _run("rank", "--model", "tinynet:build", "--images", "images", "--degrade", "fog:3", cwd=workspace)
    assert result.returncode == 2 and "degradation must look like" in result.stderr
