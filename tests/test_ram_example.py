"""The RAM example in examples/ram: the pipeline end to end on the test preset, its studies, resume, data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples.ram import blur_headroom, cli, pipeline
from examples.ram.presets import PRESETS, preset
from examples.ram.studies import WHOLE
from macattr import LayerScores
from macattr.layers import block_of
from macattr.ranking.methods import get_method
from macattr.restoration.data import PAIRED_LAYOUTS, evaluation_sets, training_batch
from macattr.restoration.evaluate import restore_with_twin_masks
from macattr.restoration.images import save_image
from macattr.restoration.networks import PromptIRStyle, SwinIRStyle
from macattr.restoration.train import train
from macattr.scores import resolve_k

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *argv: str) -> tuple:
    """``python -m examples.ram`` in this process: (exit status, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def test_run(tmp_path_factory) -> Path:
    """``all`` on the test preset, shared by the tests below (one pre-training for all of them)."""
    out = tmp_path_factory.mktemp("ram") / "test"
    assert cli.main(["all", "--preset", "test", "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_command_runs_as_a_module_from_the_repository_root(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "examples.ram", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "python -m examples.ram" in result.stdout


def test_fine_tuning_beats_the_noisy_input(test_run: Path) -> None:
    results = json.loads((test_run / "results.json").read_text())
    assert results["preset"] == "test" and results["device"] == "cpu"
    assert set(results["tasks"]) == {"noise25", "jpeg50"}
    row = results["tasks"]["noise25"]
    assert row["finetuned"]["psnr"] > row["input"]["psnr"] + 0.5, row
    for stage in ("pretrain", "analyze", "finetune", "evaluate"):
        assert results["timings_s"][stage] > 0
    assert "| noise25 |" in (test_run / "results.md").read_text()
    for name in ("scores.json", "filter_name.txt", "filter_cond.txt", "filter_index.txt", "heatmap.png"):
        assert (test_run / "analyze" / name).is_file()


def test_fine_tuning_changed_only_the_selected_layers(test_run: Path) -> None:
    before = torch.load(test_run / "pretrain" / "model.pt", weights_only=True)
    after = torch.load(test_run / "finetune" / "model.pt", weights_only=True)
    selected = (test_run / "finetune" / "layers.txt").read_text().split()
    scores = json.loads((test_run / "analyze" / "scores.json").read_text())
    assert selected == [entry["name"] for entry in scores["layers"][: len(selected)]]
    owners = {name.rsplit(".", 1)[0] if "." in name else "" for name in before}
    assert set(selected) <= owners
    for name, tensor in before.items():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner in selected:
            assert not torch.equal(tensor, after[name]), name
        else:
            assert torch.equal(tensor, after[name]), name


def test_ablation_ratios_and_robustness(test_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "studies"
    shutil.copytree(test_run, out)  # the pre-training and the analysis are reused
    common = ["--preset", "test", "--out", str(out), "--seeds", "2", "--finetune-steps", "4", "--no-progress"]
    for stage in ("ablate", "ratios", "robustness"):
        assert _run(capsys, stage, *common) == (0, ""), stage
    results = json.loads((out / "results.json").read_text())
    methods = results["ablation"]["methods"]
    assert list(methods) == list(preset("test").ablation)
    budget = results["ablation"]["budget"]
    analysis = LayerScores.load(out / "analyze" / "scores.json")
    count = resolve_k(preset("test").architectures["swinir"].k, len(analysis))
    for method in methods:  # each fine-tuning trained the top `count` units (tied layers, a block) of its ranking
        if method not in WHOLE:
            drawn = get_method(method).random_draw
            rankings = [analysis if method == "mac" else
                        LayerScores.load(out / "ablate" / (f"rank_{method}_seed{seed}.json" if drawn else
                                                           f"rank_{method}.json")) for seed in range(2)]  # fmt: skip
            assert methods[method]["seeds"] == 2 and methods[method]["layers"] == [r.top_k(count) for r in rankings]
    assert len({block_of(n) for n in methods["random_blocks"]["layers"][0]}) == count
    assert methods["random"]["layers"][0] != methods["random"]["layers"][1]  # a fresh draw per seed
    assert len(methods["full"]["layers"][0]) > budget and methods["full"]["trainable_fraction"] > 0.99
    assert methods["none"]["seeds"] == 1 and methods["none"]["layers"] == [[]]
    for method, entry in methods.items():
        for row in entry["tasks"].values():
            assert len(row["psnr_per_seed"]) == entry["seeds"]
            gap = row.get("reference_minus_this")
            assert (gap is None) == (method == "mac") and (gap is None or gap["low"] <= gap["mean"] <= gap["high"])
    assert len(methods["mac"]["per_image_psnr"]["noise25"]) == results["test_images"]["noise25"] == 64
    assert list(results["ratios"]["methods"]) == ["r=0.25", "r=0.5"]
    assert results["ratios"]["reference"] == "r=0.5"
    assert set(results["robustness"]["against_reference"]) == {"seed 1", "1 images per task", "N = 3"}
    text = (out / "results.md").read_text()
    assert "## Ablation: which layers to fine-tune" in text and "## Robustness of the MAC ranking" in text
    for method, entry in methods.items():  # the tables of PSNR, of the selection and of SSIM, in that order
        average, rows = entry["tasks"]["average"], text.split(f"| {method} |")
        assert f"| {average['psnr']:.2f} ± {average['psnr_std']:.2f} |" in rows[1]
        assert f"| {100 * entry['trainable_fraction']:.1f} % |" in rows[2]
        assert f"| {average['ssim']:.4f} ± {average['ssim_std']:.4f} |" in rows[3]
    assert (out / "ablation.png").stat().st_size > 1000
    # a subset of the methods reuses the finished fine-tunings and tabulates only those; an alias names its method
    assert _run(capsys, "ablate", *common, "--methods", "last,mac,ig") == (0, "")
    subset = json.loads((out / "results.json").read_text())["ablation"]["methods"]
    assert list(subset) == ["last", "mac", "internal_influence"]
    assert subset["mac"]["tasks"] == methods["mac"]["tasks"] and subset["last"]["layers"] == methods["last"]["layers"]
    # other fine-tuning settings in the same folder are refused, not mixed with the finished runs
    status, error = _run(capsys, "ablate", *common, "--methods", "mac", "--finetune-loss", "relative_l1")
    assert status == 2 and "seed0/model.pt was made with other settings" in error
    assert "(finetune.loss: l1 -> relative_l1)" in error
    # also with the finished network removed: its interrupted-run checkpoint must not be resumed either
    (out / "ablate" / "mac" / "seed0" / "model.pt").unlink()
    status, error = _run(capsys, "ablate", *common, "--methods", "mac", "--finetune-loss", "relative_l1")
    assert status == 2 and "(finetune.loss: l1 -> relative_l1)" in error
    status, error = _run(capsys, "ablate", *common, "--methods", "mac", "--finetune-lr", "0.003")
    assert status == 2 and "(finetune.lr: 0.002 -> 0.003)" in error
    # a pre-training made anew with other settings is not silently followed by the old analysis and metrics
    shutil.rmtree(out / "pretrain")
    status, error = _run(capsys, "ablate", *common, "--pretrain-steps", "3")
    assert status == 2 and "analyze/scores.json was made with other settings" in error
    assert "pretrained.pretrain.steps: 150 -> 3" in error
    # a file without a settings record is not adopted
    (out / "analyze" / "scores.settings.json").unlink()
    status, error = _run(capsys, "analyze", *common, "--pretrain-steps", "3")
    assert status == 2 and "scores.json has no settings record" in error


def test_training_resumes_after_an_interruption_where_it_stopped(tmp_path: Path) -> None:
    photos = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def batch_at(step: int) -> dict:
        return training_batch(photos, 16, 2, seed=3, step=step)

    def loss_of(net, pair, step) -> torch.Tensor:
        return (net(pair["lq"]) - pair["gt"]).abs().mean()

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return SwinIRStyle(dim=8, depths=(1,), heads=2, window=4)

    common = dict(steps=12, lr=1e-3, lr_min=1e-5, device=torch.device("cpu"), save_every=4, progress=False,
                  log=lambda text: None)  # fmt: skip
    reference = model()
    train(reference, reference.parameters(), batch_at, loss_of, checkpoint=tmp_path / "a" / "ckpt.pt", **common)

    class Stop(Exception):
        pass

    def failing(step: int) -> dict:
        if step == 7:
            raise Stop
        return batch_at(step)

    interrupted = model()
    with pytest.raises(Stop):
        train(interrupted, interrupted.parameters(), failing, loss_of, checkpoint=tmp_path / "b" / "ckpt.pt", **common)
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 4
    resumed = model()
    losses = train(resumed, resumed.parameters(), batch_at, loss_of, checkpoint=tmp_path / "b" / "ckpt.pt", **common)
    assert len(losses) == 8  # steps 4 to 11
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_training_batches_depend_only_on_seed_and_step() -> None:
    photos = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    a, b = training_batch(photos, 16, 4, 0, 5), training_batch(photos, 16, 4, 0, 5)
    c = training_batch(photos, 16, 4, 0, 6)
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(a["lq"], c["lq"])
    assert a["lq"].shape == a["gt"].shape == (4, 3, 16, 16)
    assert a["lq"].min() >= 0 and a["lq"].max() <= 1


def test_paired_data_sets_are_found_and_missing_ones_skipped_with_a_note(tmp_path: Path) -> None:
    lq_dir, gt_dir = (tmp_path / part for part in PAIRED_LAYOUTS["haze"])
    lq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(3):
        clean = torch.rand(3, 24, 28, generator=torch.Generator().manual_seed(i))
        save_image(gt_dir / f"{i:04d}.png", clean)
        save_image(lq_dir / f"{i:04d}_0.8_0.2.png", 0.5 * clean + 0.4)
    photos = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    sets, notes = evaluation_sets(["haze", "rain", "noise25", "lowlight-synthetic"], photos, tmp_path, 16, 2, seed=0)
    assert set(sets) == {"haze", "noise25", "lowlight-synthetic"}
    assert sets["haze"]["lq"].shape == (2, 3, 16, 16)
    assert any(note.startswith("rain: skipped") for note in notes)
    assert any("lowlight-synthetic: synthetic stand-in" in note for note in notes)


def test_twin_masks_take_each_pixel_from_the_run_that_masked_it() -> None:
    class ShowsMask(torch.nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return mask.expand_as(x).clone()  # 1 where this run masked the pixel

    out = restore_with_twin_masks(ShowsMask(), torch.rand(2, 3, 8, 8), torch.device("cpu"), seed=0)
    assert torch.equal(out, torch.ones_like(out))


@pytest.mark.parametrize("arch", [SwinIRStyle, PromptIRStyle])
def test_networks_take_any_size_and_a_mask(arch) -> None:
    settings = preset("tiny").architectures["swinir" if arch is SwinIRStyle else "promptir"].network
    model = arch(**settings)
    x = torch.rand(2, 3, 30, 21)
    mask = torch.zeros(2, 1, 30, 21)
    mask[:, :, ::2] = 1
    assert model(x).shape == x.shape and model(x, mask).shape == x.shape
    with torch.no_grad():
        model.mask_token.fill_(0.25)
        masked_input = x * (1 - mask) + 0.25 * mask
        torch.testing.assert_close(model(x, mask), model(masked_input))


def test_bad_command_line_arguments_are_refused(tmp_path: Path, capsys) -> None:
    out = ["all", "--out", str(tmp_path / "o")]
    for extra, words in [(["--k", "1.5"], "--k must be"), (["--pretrain-steps", "0"], "must be >= 1"),
                         (["--data-root", str(tmp_path / "nowhere")], "is not a folder"),
                         (["--methods", "mac,fancy"], "--methods must name mac"),
                         (["--methods", "ig,full"], "--methods must name mac"),
                         (["--finetune-loss", "l2"], "invalid choice: 'l2'"),
                         (["--finetune-lr", "1e-9"], "--finetune-lr must be above the preset's final learning rate"),
                         (["--finetune-lr", "nan"], "--finetune-lr must be above"),
                         (["--seeds", "0"], "--seeds must be >= 1"),
                         (["--steps-scale", "0"], "--steps-scale must be > 0"),
                         (["--n-steps", "0"], "--n-steps must be >= 1")]:  # fmt: skip
        status, error = _run(capsys, *out, *extra)
        assert status == 2 and words in error, (extra, error)


def test_presets_are_frozen_and_derived_with_replace() -> None:
    tiny = PRESETS["tiny"]
    with pytest.raises(AttributeError):
        tiny.batch = 3
    faster = tiny.with_finetune_lr(3e-3).with_k("swinir", 0.2).scaled(0.1)
    assert (faster.finetune.lr, faster.architectures["swinir"].k, faster.pretrain.steps) == (3e-3, 0.2, 50)
    assert (tiny.finetune.lr, tiny.architectures["swinir"].k, tiny.pretrain.steps) == (1e-3, 0.1, 500)


def test_blur_headroom_filters_are_least_squares_and_beat_the_blurred_input(tmp_path: Path, capsys) -> None:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    delta = torch.zeros(25, dtype=torch.float64)
    delta[12] = 1.0
    torch.testing.assert_close(blur_headroom.apply_filter(delta, images, 5), images)  # the centre tap: identity
    # a target made from the inputs by a known filter gives that filter back
    known = torch.rand(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = (blur_headroom.neighbourhoods(images, 3) @ known).reshape(images.shape)
    recovered = blur_headroom.fit_filter(targets, lambda crop, i: images[i : i + 1], 3)
    torch.testing.assert_close(recovered, known)
    status, _, error = _headroom(capsys, "--kernel", "5", "--crops", "16", "--size", "32", "--json",
                                 str(tmp_path / "h.json"))  # fmt: skip
    assert status == 0, error
    psnr = json.loads((tmp_path / "h.json").read_text())["psnr"]
    assert psnr["non-blind linear filter (sigma 2)"] > psnr["input"] + 1.0
    assert psnr["blind linear filter (sigma 0.1-3.1)"] > psnr["input"]
    for extra, words in [(["--kernel", "4"], "--kernel must be an odd number from 1 to 31"),
                         (["--kernel", "33"], "got 33"), (["--crops", "0"], "--crops must be"),
                         (["--size", "8"], "--size must be >= 16")]:  # fmt: skip
        status, _, error = _headroom(capsys, *extra)
        assert status == 2 and words in error


def _headroom(capsys, *argv: str) -> tuple:
    """``python -m examples.ram.blur_headroom`` in this process: (exit status, stdout, stderr)."""
    try:
        status = blur_headroom.main(list(argv))
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_blur_headroom_fine_tunes_the_network_on_blur_alone_resumes_and_refuses_other_settings(
    tmp_path: Path, capsys
) -> None:
    run = pipeline.Run(out=tmp_path, arch="swinir", preset=preset("tiny"), device=torch.device("cpu"), progress=False)
    weights = tmp_path / "pretrained.pt"
    torch.save(pipeline.build_model(run).state_dict(), weights)
    common = ["--kernel", "3", "--crops", "4", "--size", "32", "--network", str(weights), "--preset", "tiny", "--out",
              str(tmp_path / "blur_only")]  # fmt: skip
    status, out, error = _headroom(capsys, *common, "--steps", "3", "--json", str(tmp_path / "h.json"))
    assert status == 0, error
    psnr = json.loads((tmp_path / "h.json").read_text())["psnr"]
    for name in ("non-blind", "blind"):
        assert 10.0 < psnr[f"{name} network, all layers, 3 blur-only steps"] < 60.0
    trained = {folder: torch.load(tmp_path / "blur_only" / folder / "model.pt") for folder in ("sigma2", "blind")}
    assert not all(torch.equal(trained["sigma2"][k], trained["blind"][k]) for k in trained["blind"])
    assert out.count("steps 0-3") == 2  # both networks trained ...
    status, again, _ = _headroom(capsys, *common, "--steps", "3")
    assert status == 0 and "steps 0-3" not in again  # ... and reused on the rerun
    status, _, error = _headroom(capsys, *common, "--steps", "4")
    assert status == 2 and "steps: 3 -> 4" in error
    status, _, error = _headroom(capsys, *common, "--steps", "3", "--lr", "0.01")
    assert status == 2 and "lr: 0.001 -> 0.01" in error
    missing = str(tmp_path / "missing.pt")
    for extra, words in [(["--steps", "0"], "--steps must be >= 1"),
                         (["--lr", "1e-7"], "--lr must be above the preset's final learning rate 1e-07"),
                         (["--lr", "nan"], "--lr must be above"),
                         (["--network", missing], "--network must be a model.pt file")]:  # fmt: skip
        status, _, error = _headroom(capsys, *common, *extra)
        assert status == 2 and words in error
    status, _, error = _headroom(capsys, "--network", str(weights))
    assert status == 2 and "--network needs --out" in error
    status, _, error = _headroom(capsys, *common, "--preset", "medium", "--out", str(tmp_path / "medium"))
    assert status == 2 and "do not fit the model" in error  # tiny weights, medium network
