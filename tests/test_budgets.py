"""Budgets in parameters, the share of parameters a selection trains, and the Fisher method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net
from macattr import LayerScores, freeze_except, plot_layer_importance, rank_layers, select_top_k
from macattr.finetune import parameter_counts


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 50)), min_size=1, max_size=30), st.floats(0.05, 1.0))
def test_the_parameter_budget_is_a_cap_filled_down_the_ranking(layers: list, k: float) -> None:
    names = [f"l{i}" for i in range(len(layers))]
    sizes = {n: size for n, (_, size) in zip(names, layers)}
    scores = LayerScores({n: score for n, (score, _) in zip(names, layers)}, "mac", parameters=sizes,
                         model_parameters=sum(sizes.values()) + 7)  # fmt: skip
    allowed = int(k * (sum(sizes.values()) + 7) + 1e-9)
    try:
        chosen = scores.top_k(k, budget="parameters")
    except ValueError as error:  # only when no layer fits at all
        assert "fewer than the smallest unit" in str(error)
        assert min(sum(sizes[n] for n in unit) for unit in scores.units()) > allowed
        return
    assert sum(sizes[n] for n in chosen) <= allowed
    used = 0
    for unit in scores.units():  # a unit (tied layers) is left out only because it did not fit when its turn came
        size = sum(sizes[n] for n in unit)
        if unit[0] in chosen:
            assert set(unit) <= set(chosen)
            used += size
        else:
            assert used + size > allowed and not set(unit) & set(chosen)
    assert chosen == [n for n, _ in scores.ranked() if n in chosen]  # best first


def test_rankings_record_the_parameter_counts_and_files_keep_them(tmp_path: Path) -> None:
    model = conv_net(0)
    scores = rank_layers(model, [torch.rand(2, 3, 6, 6, dtype=torch.float64)], n_steps=3, progress=False)
    sizes, total = parameter_counts(model, scores.names)
    assert scores.parameters == sizes and scores.model_parameters == total == sum(p.numel() for p in model.parameters())
    loaded = LayerScores.load(scores.save(tmp_path / "s.json"))
    assert loaded.parameters == sizes and loaded.model_parameters == total
    top = scores.top_k(0.4, budget="parameters")
    assert top == loaded.top_k(0.4, budget="parameters") == scores.top_k(0.4, "parameters", model=model)
    with freeze_except(model, top) as trainable:
        assert trainable.fraction == pytest.approx(scores.share(top)) and trainable.fraction <= 0.4
    frozen = conv_net(0)
    frozen[0].requires_grad_(False)  # a frozen layer counts what fine-tuning it would train
    assert parameter_counts(frozen, ["0"]) == ({"0": sizes["0"]}, total)


def test_select_top_k_and_the_command_budget_in_parameters(tmp_path: Path, capsys, monkeypatch) -> None:
    model, x = conv_net(1), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    chosen = select_top_k(model, [x], k=0.3, budget="parameters", n_steps=3, seed=0, progress=False)
    assert chosen == rank_layers(model, [x], n_steps=3, seed=0, progress=False).top_k(0.3, "parameters")
    with pytest.raises(ValueError, match="budget must be 'layers' or 'parameters'"):
        select_top_k(model, [x], k=0.3, budget="flops", n_steps=3, progress=False)
    with pytest.raises(ValueError, match="needs the parameter counts"):
        LayerScores({"a": 1.0}, "mac").top_k(0.5, budget="parameters")
    from macattr.cli import main

    (tmp_path / "nets.py").write_text("from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, "
                                      "padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))\n")  # fmt: skip
    (tmp_path / "data.py").write_text("import torch\ndef batches():\n    return [torch.rand(1, 3, 8, 8)]\n")
    monkeypatch.chdir(tmp_path)
    status = main(["rank", "--model", "nets:build", "--loader", "data:batches", "--n-steps", "2", "--k", "0.5",
                   "--budget", "parameters", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0 and "top 1 (k=0.5 of the parameters), 49.8 % of the parameters:" in out


def test_figures_name_the_share_of_parameters_the_marked_layers_train() -> None:
    scores = LayerScores({"b.0.conv": 1.0, "b.1.conv": 3.0}, "mac", parameters={"b.0.conv": 30, "b.1.conv": 10},
                         model_parameters=50)  # fmt: skip
    title = plot_layer_importance(scores, top_k=1).axes[0].get_title()
    assert "top 1 (20.0 % of the parameters) outlined" in title


def test_fisher_is_the_mean_squared_gradient_of_each_layers_own_parameters() -> None:
    model = conv_net(2)
    x, y = torch.rand(3, 3, 6, 6, dtype=torch.float64), torch.rand(3, 3, 6, 6, dtype=torch.float64)
    scores = rank_layers(model, [(x, y)], "fisher", progress=False)
    expected = dict.fromkeys(scores.names, 0.0)
    for i in range(3):
        model.zero_grad()
        (model(x[i : i + 1]) - y[i : i + 1]).abs().mean().backward()
        for name in scores.names:
            params = list(model.get_submodule(name).parameters(recurse=False))
            squares = sum(float(p.grad.square().sum()) for p in params)
            expected[name] += squares / sum(p.numel() for p in params)
    assert dict(scores) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(TypeError, match="method='fisher' needs .input, ground truth. batches"):
        rank_layers(model, [x], "fisher", progress=False)
    with pytest.raises(ValueError, match="own none"):
        rank_layers(nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 1))), [(x, y)], "fisher", layers=nn.Sequential,
                    progress=False)  # fmt: skip


@given(
    values=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=8),
    sizes=st.lists(st.integers(1, 40), min_size=8, max_size=8),
    allowed=st.integers(1, 150),
)
def test_the_knapsack_is_the_best_set_that_fits_and_no_strategy_breaks_the_cap(values, sizes, allowed) -> None:
    from itertools import combinations

    from macattr.selection import fill_budget

    names = [f"l{i}" for i in range(len(values))]
    scores = dict(sorted(zip(names, values), key=lambda item: -item[1]))
    size = dict(zip(names, sizes))
    subsets = [subset for r in range(len(names) + 1) for subset in combinations(names, r)]
    best = max(sum(scores[n] for n in subset) for subset in subsets if sum(size[n] for n in subset) <= allowed)
    picked = {strategy: fill_budget(scores, size, allowed, strategy) for strategy in ("greedy", "per_parameter",
                                                                                       "knapsack")}  # fmt: skip
    for strategy, chosen in picked.items():
        assert sum(size[n] for n in chosen) <= allowed, strategy
        assert chosen == [n for n in scores if n in chosen], strategy  # best score first
    assert sum(scores[n] for n in picked["knapsack"]) == pytest.approx(best, abs=1e-9)
    assert all(sum(scores[n] for n in picked["knapsack"]) >= sum(scores[n] for n in c) - 1e-9 for c in picked.values())


def test_strategies_reach_top_k_select_top_k_lora_config_and_the_command(tmp_path: Path, monkeypatch) -> None:
    scores = LayerScores({"a": 10.0, "b": 6.0, "c": 6.0}, "mac", parameters={"a": 60, "b": 50, "c": 50},
                         model_parameters=200)  # fmt: skip
    assert scores.top_k(0.5, "parameters") == ["a"] and scores.top_k(0.5, "parameters", strategy="knapsack") == [
        "b",
        "c",
    ]
    dense = LayerScores({"a": 10.0, "b": 6.0}, "mac", parameters={"a": 100, "b": 10}, model_parameters=110)
    assert dense.top_k(1) == ["a"] and dense.top_k(1, strategy="per_parameter") == ["b"]  # 0.6 per parameter
    with pytest.raises(ValueError, match="strategy must be one of"):
        scores.top_k(0.5, "parameters", strategy="best")
    model, x = conv_net(1), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    ranked = rank_layers(model, [x], n_steps=3, seed=0, progress=False)
    for strategy in ("greedy", "per_parameter", "knapsack"):
        chosen = select_top_k(model, [x], k=0.5, budget="parameters", strategy=strategy, n_steps=3, seed=0,
                              progress=False)  # fmt: skip
        assert chosen == ranked.top_k(0.5, "parameters", strategy=strategy)
        assert sum(ranked.parameters[n] for n in chosen) <= 0.5 * ranked.model_parameters
    pytest.importorskip("peft")
    from macattr.peft import lora_config

    linear = nn.Sequential(nn.Linear(5, 10), nn.Linear(10, 5), nn.Linear(5, 5))  # 60, 55, 30 parameters
    sized = LayerScores({"0": 10.0, "1": 6.0, "2": 5.0}, "mac", parameters={"0": 60, "1": 55, "2": 30},
                        model_parameters=145)  # fmt: skip
    assert lora_config(sized, linear, k=90, budget="parameters").targets == ["0", "2"]
    assert lora_config(sized, linear, k=90, budget="parameters", strategy="knapsack").targets == ["0", "2"]
    assert lora_config(sized, linear, k=85, budget="parameters", strategy="knapsack").targets == ["1", "2"]
    from macattr.cli import main

    (tmp_path / "strategy_net.py").write_text("import torch\nfrom torch import nn\ndef build():\n"
                                              "    torch.manual_seed(1)\n    return nn.Sequential(nn.Conv2d(3, 6, 3,"
                                              " padding=1), nn.Tanh(), nn.Conv2d(6, 3, 3, padding=1))\n"
                                              "def batches():\n    return [torch.rand(2, 3, 6, 6)]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["rank", "--model", "strategy_net:build", "--loader", "strategy_net:batches", "--n-steps", "2",
                 "--budget", "parameters", "--k", "0.5", "--strategy", "knapsack", "--no-progress"]) == 0  # fmt: skip
