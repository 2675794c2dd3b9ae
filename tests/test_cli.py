"""The macattr command end to end, with its errors (in this process; the entry point and Ctrl-C in subprocesses)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from macattr.cli import main
from macattr.restoration.images import sample_images, save_image


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _run(*args: str, cwd: Path) -> Result:
    """The command in this process, from the folder ``cwd`` (the process-level behaviour, signals and the
    entry point, is tested in subprocesses below)."""
    out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's errors and --version
                code = exit.code
    finally:
        os.chdir(previous)
    return Result(code, out.getvalue(), err.getvalue())


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
    broken = root / "broken"
    broken.mkdir()
    save_image(broken / "a.png", sample_images(32)[0])
    (broken / "b.png").write_bytes((images / "im1.png").read_bytes()[:200])  # truncated
    (root / "text").mkdir()
    (root / "text" / "notes.png").write_text("not an image")
    (root / "code.pth").write_bytes(pickle.dumps(Path("anything")))  # a pickle that needs code to load
    (root / "raising.py").write_text("def build():\n    raise RuntimeError('no GPU here')\n")
    (root / "classifier.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, 5))\n"
    )
    (root / "batches.py").write_text(
        "import torch\n"
        "def pairs():\n    g = torch.Generator().manual_seed(0)\n"
        "    return [(torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)) for _ in range(2)]\n"
        "def nothing():\n    return 3\n"
    )
    package = root / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("from tinynet import build\n")
    return root


def test_demo_writes_scores_heatmap_and_prints_top_k(workspace: Path) -> None:
    result = _run("demo", "--out", "out", "--pretrain-steps", "3", "--n-steps", "2", "--no-progress", cwd=workspace)
    assert result.returncode == 0, result.stderr
    out = workspace / "out"
    for name in ("model.pt", "scores.json", "heatmap.png", "profile.png", "scores.csv", "filter_name.txt"):
        assert (out / name).is_file()
    document = json.loads((out / "scores.json").read_text())
    top = [entry["name"] for entry in document["layers"][:4]]
    assert "top 4 of 35 layers" in result.stdout and all(name in result.stdout for name in top)


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
    result = _run("compare", "s.json", "ig.json", "g.json", "--out", "cmp.pdf", "--top-k", "1", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "Spearman" in result.stdout and len(result.stdout.splitlines()) == 1 + 3 + 1  # header, 3 pairs, wrote
    assert (workspace / "cmp.pdf").read_bytes()[:4] == b"%PDF"
    result = _run("plot", "s.json", "ig.json", "--kind", "profile", "--out", "p.svg", "--top-k", "1", cwd=workspace)
    assert result.returncode == 0 and b"<svg" in (workspace / "p.svg").read_bytes()
    result = _run("plot", "s.json", "--out", "p.jpeg", cwd=workspace)
    assert result.returncode == 2 and "--out must end in one of .png, .svg, .pdf" in result.stderr
    result = _run("compare", "s.json", "--out", "c.png", cwd=workspace)
    assert result.returncode == 2 and "two or more" in result.stderr


def test_rank_any_model_from_a_loader_along_a_chosen_path(workspace: Path) -> None:
    common = ["rank", "--model", "tinynet:build", "--loader", "batches:pairs", "--n-steps", "3", "--no-progress"]
    result = _run(*common, "--method", "conductance", "--path", "blur", "--blur-sigma", "1.5", "--out", "b.json",
                  cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((workspace / "b.json").read_text())
    assert document["images"] == 4 and document["config"]["path"] == {"type": "BlurPath", "sigma": 1.5, "size": None}
    result = _run(*common, "--method", "gradnorm", "--out", "g2.json", cwd=workspace)  # the loader's pairs: truth
    assert result.returncode == 0, result.stderr
    result = _run(*common, "--path", "mask", "--mask-ratio", "0.25", "--out", "m.json", cwd=workspace)
    assert json.loads((workspace / "m.json").read_text())["config"]["path"]["mask_ratio"] == 0.25


@pytest.mark.parametrize(
    "args, words",
    [
        (["--path", "blur", "--mask-ratio", "0.3"], "--mask-ratio belong to --path mask"),
        (["--blur-sigma", "2"], "--blur-sigma belongs to --path blur"),
        (["--path", "linear"], "integrates along a MaskAttributionPath"),
        (["--method", "conductance", "--sharpness", "10"], "does not use it"),
        (["--images", "images"], "pass one of --images"),
        (["--size", "8"], "--size work on --images"),
    ],
)
def test_path_and_loader_options_that_do_not_fit_are_refused(workspace: Path, args: list, words: str) -> None:
    result = _run("rank", "--model", "tinynet:build", "--loader", "batches:pairs", *args, cwd=workspace)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    result = _run("rank", "--model", "tinynet:build", "--loader", "batches:nothing", cwd=workspace)
    assert result.returncode == 2 and "returned int, not an iterable of batches" in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["rank", "--model", "tinynet:build", "--weights", "missing.pth", "--images", "images"], "does not exist"),
        (["rank", "--model", "no_such_module:build", "--images", "images"], "cannot import"),
        (["rank", "--model", "tinynet", "--images", "images"], "package.module:name"),
        (["rank", "--model", "tinynet:nothing", "--images", "images"], "no callable"),
        (["rank", "--model", "tinynet:build", "--images", "empty"], "holds no images"),
        (["rank", "--model", "tinynet:build", "--images", "nowhere"], "does not exist"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--k", "5", "--n-steps", "1"], "k must be"),
        (["plot", "missing.json"], "does not exist"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--method", "gradnorm"], "needs ground truth"),
        (["demo", "--k", "0"], "k must be"),
        (["rank", "--model", "tinynet:build", "--weights", "code.pth", "--images", "images"], "code.pth"),
        (["rank", "--model", "tinynet:build", "--images", "broken"], "b.png"),
        (["rank", "--model", "tinynet:build", "--images", "text"], "notes.png"),
        (["rank", "--model", "raising:build", "--images", "images"], "raised RuntimeError: no GPU here"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--size", "0"], "--size: must be an integer >= 1"),
        (["rank", "--model", "tinynet:build", "--images", "images", "--device", "cuda:7"], "cuda"),
        (["plot", "images/im0.png"], "im0.png"),
    ],
)
def test_errors_exit_non_zero_with_a_clear_message(workspace: Path, args: list, words: str) -> None:
    result = _run(*args, cwd=workspace)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("k", ["0", "-1", "3"])
def test_a_bad_k_is_refused_before_any_work(workspace: Path, k: str) -> None:
    checkpoint = workspace / f"k{k}.ckpt.json"
    result = _run("rank", "--model", "tinynet:build", "--images", "images", "--k", k, "--checkpoint", checkpoint.name,
                  "--no-progress", cwd=workspace)  # fmt: skip
    assert result.returncode == 2 and "k must be" in result.stderr and "Traceback" not in result.stderr
    assert not checkpoint.exists()


def test_models_from_the_current_folder_or_a_file_path(workspace: Path) -> None:
    common = ["--images", str(workspace / "images"), "--n-steps", "2", "--no-progress"]
    result = _run("rank", "--model", "mypkg.models:build", *common, "--out", "pkg.json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    result = _run("rank", "--model", str(workspace / "tinynet.py") + ":build", *common,
                  "--out", str(workspace / "file.json"), cwd=workspace.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "pkg.json").read_text())["images"] == 2


def test_version_and_a_class_index_target(workspace: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "macattr", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("macattr 0.")
    result = _run("rank", "--model", "classifier:build", "--images", "images", "--target", "3", "--n-steps", "3",
                  "--method", "conductance", "--out", "cls.json", "--no-progress", cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "cls.json").read_text())["config"]["target"] == 3
    result = _run("rank", "--model", "classifier:build", "--images", "images", "--target", "-2", cwd=workspace)
    assert result.returncode == 2 and "class index must be >= 0" in result.stderr


def test_ctrl_c_exits_130_and_names_the_checkpoint(workspace: Path) -> None:
    checkpoint = workspace / "slow.ckpt.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "macattr", "rank", "--model", "tinynet:build", "--images", "images", "--degrade",
         "noise:25,blur:2,jpeg:50", "--n-steps", "3000", "--checkpoint", checkpoint.name, "--no-progress",
         "--out", "slow.json"],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's background job ignores SIGINT
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and checkpoint.name in stderr and "Traceback" not in stderr
    assert json.loads(checkpoint.read_text())["samples"] >= 1


def test_compare_refuses_unrelated_files_unless_asked(workspace: Path) -> None:
    (workspace / "x.json").write_text(json.dumps({"method": "mac", "layers": [
        {"name": n, "score": float(i)} for i, n in enumerate(["a", "b", "c", "d", "e", "f", "g"])]}))  # fmt: skip
    (workspace / "y.json").write_text(json.dumps({"method": "ig", "layers": [
        {"name": n, "score": float(i)} for i, n in enumerate(["a", "b", "c", "p", "q", "r", "s", "t"])]}))  # fmt: skip
    result = _run("compare", "x.json", "y.json", "--out", "xy.png", cwd=workspace)
    assert result.returncode == 2 and "share only 3 layers" in result.stderr
    result = _run("compare", "x.json", "y.json", "--out", "xy.png", "--allow-partial", "--top-k", "1", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert re.search(r"x\.json\s+y\.json\s+3\s", result.stdout) and "layers" in result.stdout.splitlines()[0]


def test_argument_errors(workspace: Path) -> None:
    result = _run("demo", "--k", "1.5", cwd=workspace)
    assert result.returncode == 2 and "k must be a fraction" in result.stderr
    result = _run("rank", "--model", "tinynet:build", "--images", "images", "--degrade", "fog:3", cwd=workspace)
    assert result.returncode == 2 and "degradation must look like" in result.stderr


def test_help_and_version_load_no_torch_and_help_shows_groups_and_defaults() -> None:
    code = ("import sys\nfrom macattr.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")  # fmt: skip
    for argv in (["--version"], ["--help"], ["rank", "--help"]):
        result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.rstrip().endswith("no torch"), (argv, result.stderr)
    result = subprocess.run([sys.executable, "-c", code, "rank", "--help"], capture_output=True, text=True)
    text = " ".join(result.stdout.split())
    for group in ("input:", "model:", "method:", "estimator:", "selection:", "output:", "runs:"):
        assert f"\n{group}" in result.stdout, group
    for shown in ("(default: 200)", "(default: left)", "(default: 0.1)", "(default: greedy)", "(default: 0)",
                  "(default: scores.json)", "(default: mac)", "(default: gradient_magnitude)"):  # fmt: skip
        assert shown in text, shown


class _BarRecorder:
    """Stands in for tqdm: records each bar's total and what it counted."""

    bars: list = []

    def __init__(self, total=None, **options) -> None:
        self.total, self.n, self.options = total, 0, options
        _BarRecorder.bars.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def test_the_progress_bar_counts_images_against_a_known_total(workspace: Path, monkeypatch) -> None:
    import macattr.ranking

    monkeypatch.setattr(macattr.ranking, "tqdm", _BarRecorder)
    _BarRecorder.bars = []
    result = _run("rank", "--model", "tinynet:build", "--images", "images", "--degrade", "noise:25,blur:2,jpeg:50",
                  "--n-steps", "3", "--out", "bar.json", cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (bar,) = _BarRecorder.bars
    assert bar.total == bar.n == 6 and bar.options["unit"] == "image" and "N=3" in bar.options["desc"]
    _BarRecorder.bars = []  # --per-task 1: one image of each degradation, counted before the walk
    result = _run("rank", "--model", "tinynet:build", "--images", "images", "--degrade", "noise:25,blur:2",
                  "--per-task", "1", "--n-steps", "3", "--out", "bar.json", "--check-steps", cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [(b.total, b.n) for b in _BarRecorder.bars] == [(2, 2), (2, 2), (2, 2)]  # N, N/2, then the ranking
    assert ["N=3" in b.options["desc"] for b in _BarRecorder.bars] == [True, False, True]


def test_rank_says_what_a_pass_holds_once_the_first_pass_has_measured_it(workspace: Path) -> None:
    common = ["rank", "--model", "tinynet:build", "--weights", "w.pth", "--images", "images", "--n-steps", "3"]
    shown = _run(*common, "--out", "m.json", cwd=workspace)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stderr.splitlines() if line.startswith("macattr: memory:")]
    assert len(lines) == 1, shown.stderr
    assert re.search(r"one pass of \d+ images? × \d+ grid points? ≈ [\d.]+ [KMG]iB", lines[0])
    quiet = _run(*common, "--out", "m.json", "--no-progress", cwd=workspace)
    assert quiet.returncode == 0 and "macattr: memory:" not in quiet.stderr


def test_rank_takes_a_segment_rule_records_it_and_counts_its_passes_in_the_step_check(workspace: Path) -> None:
    result = _run("rank", "--model", "tinynet:build", "--weights", "w.pth", "--images", "images", "--n-steps", "4",
                  "--rule", "gauss2", "--check-steps", "--out", "gauss.json", "--no-progress",
                  cwd=workspace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(20 passes per image)" in result.stdout  # N = 4 and 2 segments: 13 + 7 points
    assert json.loads((workspace / "gauss.json").read_text())["config"]["rule"] == "gauss2"
    refused = _run("rank", "--model", "tinynet:build", "--images", "images", "--rule", "gauss1", cwd=workspace)
    assert refused.returncode == 2 and "--rule" in refused.stderr and "gauss2" in refused.stderr


def test_check_steps_on_a_factorys_iterator_leaves_every_image_to_the_ranking(workspace: Path) -> None:
    (workspace / "streams.py").write_text(
        "import torch\n"
        "def twelve():\n    g = torch.Generator().manual_seed(0)\n"
        "    return iter([torch.rand(2, 3, 8, 8, generator=g) for _ in range(6)])\n"
    )
    common = ["rank", "--model", "tinynet:build", "--loader", "streams:twelve", "--n-steps", "4", "--no-progress"]
    result = _run(*common, "--check-steps", "--out", "checked.json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "checked.json").read_text())["images"] == 12
    result = _run(*common, "--check-steps", "--n-steps", "1", "--out", "one.json", cwd=workspace)
    assert result.returncode == 2 and "--n-steps must be >= 2, got 1" in result.stderr


def test_weights_options_without_a_weights_file_are_refused(workspace: Path) -> None:
    common = ["rank", "--model", "tinynet:build", "--images", "images", "--n-steps", "2", "--no-progress"]
    for option in (["--weights-key", "params"], ["--non-strict"]):
        result = _run(*common, *option, "--out", "ignored.json", cwd=workspace)
        assert result.returncode == 2 and f"{option[0]} says how to read a weights file" in result.stderr
        assert not (workspace / "ignored.json").exists()


def test_a_checkpoint_named_as_the_output_and_a_huge_dpi_are_refused_before_any_work(workspace: Path) -> None:
    common = ["rank", "--model", "tinynet:build", "--images", "images", "--n-steps", "2", "--no-progress"]
    result = _run(*common, "--out", "same.json", "--checkpoint", "same.json", cwd=workspace)
    assert result.returncode == 2 and "--checkpoint and --out name the same file" in result.stderr
    assert not (workspace / "same.json").exists()
    result = _run("plot", "s.json", "--dpi", "100000", "--out", "huge.png", cwd=workspace)
    assert result.returncode == 2 and "must be an integer in [10, 2400], got '100000'" in result.stderr
