"""The selection study's protocol (examples/selection): learning rates from the validation split only, the best
baseline and the paired intervals against it, runs cached and resumed; and the digits domain at a seconds scale."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.selection.harness import Protocol, run
from macattr import LayerScores

NAMES = ["a", "b", "c", "d"]
SIZES = {"a": 10, "b": 10, "c": 40, "d": 40}


class Toy:
    """A domain whose outcome is known: test accuracy is the share of layer "c" and "d" selected, and the
    validation split prefers lr 0.1 while the test split would prefer lr 0.01."""

    name, metric, scale = "toy", "accuracy (%)", 100.0

    def __init__(self) -> None:
        self.calls: list = []

    def rank(self, method: str, seed: int):
        values = {"mac": [1, 2, 3, 4], "gradnorm": [4, 3, 2, 1], "random": list(np.random.default_rng(seed).random(4))}
        scores = LayerScores(dict(zip(NAMES, map(float, values[method]))), method, parameters=SIZES,
                             model_parameters=100)  # fmt: skip
        return scores, 7

    def fine_tune(self, names, lr, seed, split):
        self.calls.append((split, lr))
        good = 1.0 if names is None else len({"c", "d"} & set(names)) / 2
        bonus = {"validation": {0.1: 0.1, 0.01: 0.0}, "test": {0.1: 0.0, 0.01: 0.1}}[split][lr]
        items = np.zeros(200)
        items[: int(200 * min(good * 0.8 + bonus, 1.0))] = 1.0
        return items

    def trainable(self, names):
        return 100 if names is None else sum(SIZES[n] for n in names)


def test_the_protocol_tunes_on_validation_compares_with_the_best_baseline_and_resumes(tmp_path: Path) -> None:
    protocol = Protocol(budgets=(0.8,), lrs=(0.01, 0.1), seeds=2, entries=(("mac", "greedy"),),
                        baselines=(("gradnorm", "greedy"), ("random", "greedy")), full=True)  # fmt: skip
    domain = Toy()
    results = run(domain, protocol, tmp_path, log=lambda line: None)
    table = results["budgets"]["0.8"]
    mac, gradnorm = table["methods"]["mac"], table["methods"]["gradnorm"]
    assert mac["layers"] == [["d", "c"], ["d", "c"]] and gradnorm["layers"] == [["a", "b", "c"]] * 2
    assert all(entry["lr"] == 0.1 for entry in table["methods"].values())  # the validation's choice, not the test's
    assert mac["mean"] == pytest.approx(0.8) and mac["trainable"] == 80
    assert table["best_baseline"] in ("gradnorm", "random") and "mac" in table["entries_above_it"]
    gap = mac["minus_best_baseline"]
    assert gap["low"] <= gap["mean"] <= gap["high"] and gap["mean"] > 0
    assert results["analysis_cost"]["mac"]["passes"] == 7 and results["analysis_cost"]["random"]["passes"] == 14
    assert not any(split == "test" and lr == 0.01 for split, lr in domain.calls)  # the test split never tunes
    again = Toy()  # a rerun finds every fine-tuning in the cache
    assert run(again, protocol, tmp_path, log=lambda line: None)["budgets"] == results["budgets"]
    assert again.calls == []
    assert "| mac | macattr | 80.00 ± 0.00 |" in (tmp_path / "selection_toy.md").read_text()
    assert len(json.loads((tmp_path / "runs_toy.json").read_text())) == len(domain.calls)


def _quick_digits(task: str):
    """The digits domain of ``task`` at a seconds scale (one epoch, N = 4, 60 training images)."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("sklearn")
    from examples.digits.experiment import Settings
    from examples.selection.digits import DigitsDomain, pretrained

    settings = replace(Settings(), pretrain_epochs=1, finetune_epochs=1, n_steps=4, analysis_images=25,
                       train_images=60)  # fmt: skip
    return DigitsDomain(task, pretrained(settings), settings)


def test_the_digits_domain_runs_the_protocol_in_seconds(tmp_path: Path) -> None:
    domain = _quick_digits("shifted")
    assert len(domain.train[1]) == 48 and len(domain.validation[1]) == 12 and len(domain.test[1]) == 797
    protocol = Protocol(budgets=(0.15,), lrs=(1e-3,), seeds=1, entries=(("mac", "knapsack"),),
                        baselines=(("kappa", "greedy"), ("last", "greedy")), full=False)  # fmt: skip
    with pytest.warns(UserWarning):  # few steps: the certificate's warning
        results = run(domain, protocol, tmp_path, log=lambda line: None)
    table = results["budgets"]["0.15"]["methods"]
    for entry in table.values():
        assert entry["trainable"] <= 0.15 * sum(p.numel() for p in domain.model.parameters()) + 330  # + the head
        assert len(entry["per_item"]) == 797 and 0 <= entry["mean"] <= 1
    assert results["analysis_cost"]["mac"]["passes"] == 25 * 4 and results["analysis_cost"]["kappa"]["passes"] == 0


def test_lora_ranks_placed_three_ways_spend_about_the_same_parameters(tmp_path: Path) -> None:
    domain = _quick_digits("relabelled")
    from examples.selection.digits import rank_allocation

    with pytest.warns(UserWarning):  # few steps: the certificate's warning
        results = rank_allocation(domain, ("mac", "kappa"), (1e-3,), 1, 5, tmp_path, log=lambda line: None)
    table = results["methods"]
    uniform = table["uniform ranks"]
    assert uniform["layers"][0] == dict.fromkeys(domain.adaptable(), 4) and len(domain.adaptable()) == 25
    for method in ("mac", "kappa"):
        shared, top = table[f"ranks shared by {method}"], table[f"top 5 of {method}"]
        assert set(shared["layers"][0]) == set(domain.adaptable()) and min(shared["layers"][0].values()) >= 1
        assert len(top["layers"][0]) >= 5 and len(set(top["layers"][0].values())) <= 2  # one rank (or the cap)
        for entry in (shared, top):  # no more LoRA parameters than the uniform ranks, and not far below
            assert 0.85 * uniform["trainable"] <= entry["trainable"] <= uniform["trainable"]
    assert table["ranks shared by kappa"]["baseline"] and not table["top 5 of mac"]["baseline"]
    assert results["best_baseline"] in table and (tmp_path / "allocation_digits_relabelled.json").exists()


def test_the_restoration_domain_runs_the_protocol_on_the_test_preset(tmp_path: Path) -> None:
    from examples.selection.restoration import RestorationDomain

    domain = RestorationDomain(tmp_path, "test")
    tiles = [len(data["lq"]) for data in domain.test.values()]
    assert domain.name == "ram_test" and [len(d["lq"]) for d in domain.validation.values()] == tiles
    protocol = Protocol(budgets=(0.15,), lrs=(2e-3,), seeds=1, entries=(("mac", "greedy"),),
                        baselines=(("kappa", "greedy"),), full=False)  # fmt: skip
    with pytest.warns(UserWarning):  # few steps: the certificate's warning
        results = run(domain, protocol, tmp_path, log=lambda line: None)
    table = results["budgets"]["0.15"]["methods"]
    assert len(table["mac"]["per_item"]) == sum(tiles) and 5 < table["mac"]["mean"] < 60  # PSNR in dB
    assert table["mac"]["trainable"] <= 0.15 * domain.trainable(None)


def test_the_pitch_domain_hears_tones_with_crepes_published_weights_and_runs_the_protocol(tmp_path: Path) -> None:
    from examples.selection.pitch import PitchDomain, PitchSettings, bins_of, correct, pretrained, tones

    model = pretrained()
    clean, shifted = tones(256, 7, shifted=False), tones(256, 7, shifted=True)
    assert correct(model, *clean).mean() > 0.95  # the published weights, loaded into the network written here
    assert correct(model, *shifted).mean() < correct(model, *clean).mean() - 0.15  # a shift worth adapting to
    assert bins_of(torch.tensor([10.0 * 2 ** (1997.3794084376191 / 1200)])).item() == 0  # bin 0 is 32.70 Hz
    settings = PitchSettings(train_frames=64, validation_frames=32, test_frames=32, analysis_frames=16, steps=2,
                             batch=8, n_steps=4)  # fmt: skip
    domain = PitchDomain(settings)
    protocol = Protocol(budgets=(0.15,), lrs=(1e-4,), seeds=1, entries=(("mac", "knapsack"),),
                        baselines=(("gradnorm", "greedy"), ("last", "greedy")), full=False)  # fmt: skip
    with pytest.warns(UserWarning):  # few steps: the certificate's warning
        results = run(domain, protocol, tmp_path, log=lambda line: None)
    table = results["budgets"]["0.15"]["methods"]
    for entry in table.values():
        assert entry["trainable"] <= 0.15 * domain.trainable(None) and len(entry["per_item"]) == 32
    assert results["analysis_cost"]["mac"]["passes"] == 16 * 4 and results["analysis_cost"]["last"]["passes"] == 0
