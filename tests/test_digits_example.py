"""The digits experiment (examples/digits) at a seconds scale: every method chooses within the same parameter
budget, LoRA adapts exactly its choice, and the results are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("sklearn")

from examples.digits.experiment import METHODS, TASKS, Settings, digits, run, shift  # noqa: E402


def test_the_experiment_runs_and_every_method_keeps_to_the_budget(tmp_path: Path) -> None:
    settings = Settings(seeds=1, train_images=50, pretrain_epochs=1, finetune_epochs=1, n_steps=2, analysis_images=25)
    results = run(tmp_path, settings)
    assert json.loads((tmp_path / "digits.json").read_text())["tasks"].keys() == set(TASKS)
    for table in results["tasks"].values():
        methods = table["methods"]
        assert list(methods) == [*METHODS, "full"] and table["test_images"] == 797
        for method in METHODS:
            assert methods[method]["layers"][0] and 0 <= methods[method]["accuracy"] <= 1
            assert methods[method]["trainable"] < methods["full"]["trainable"] / 4
        assert methods["random"]["mac_minus_this"]["low"] <= methods["random"]["mac_minus_this"]["high"]
    assert "| mac |" in (tmp_path / "digits.md").read_text()


def test_the_shifted_tasks() -> None:
    images, labels, _, _ = digits()
    assert images.shape == (1000, 1, 8, 8) and float(images.max()) <= 1.0
    inverted, same = shift("shifted", images, labels, seed=1)
    assert (same == labels).all() and float((inverted - (1 - images)).abs().mean()) < 0.2
    _, moved = shift("relabelled", images, labels, seed=1)
    assert ((moved - labels) % 10 == 1).all()
    with pytest.raises(ValueError, match="task must be one of"):
        shift("rotated", images, labels, seed=1)
