"""Conductance's three step rules: a direct computation, their order on a smooth path, batching, settings."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net
from macattr import LayerMAC, LayerPathConductance, RankSettings, rank_layers, targets
from macattr.accumulators import STEP_RULES


def _direct(model: nn.Sequential, layer: nn.Module, x: torch.Tensor, n_steps: int, rule: str) -> torch.Tensor:
    """Conductance along the linear path, one grid point per pass with a hook: Σ_j ĝ_j (y_{j+1} − y_j)."""
    values, grads = [], []
    for alpha in torch.linspace(0, 1, n_steps + 1, dtype=torch.float64):
        captured = {}
        handle = layer.register_forward_hook(lambda m, a, out, captured=captured: captured.setdefault("y", out))
        try:
            point = (alpha * x).requires_grad_()
            score = targets.output_sum(model)(point).sum()
            (grad,) = torch.autograd.grad(score, captured["y"])
        finally:
            handle.remove()
        values.append(captured["y"].detach())
        grads.append(grad)
    total = torch.zeros_like(values[0])
    for j in range(n_steps):
        step = {"left": grads[j], "right": grads[j + 1], "trapezoid": (grads[j] + grads[j + 1]) / 2}[rule]
        total += step * (values[j + 1] - values[j])
    return total


@pytest.mark.parametrize("rule", STEP_RULES)
def test_each_rule_matches_a_direct_computation(rule: str) -> None:
    model = conv_net(0)
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = LayerPathConductance(targets.output_sum(model), model[2]).attribute(x, n_steps=7, rule=rule)
    torch.testing.assert_close(ours, _direct(model, model[2], x, 7, rule), rtol=1e-10, atol=1e-12)


def _errors(rule: str, steps: list) -> list:
    model = conv_net(1)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    conductance = LayerPathConductance(targets.output_sum(model), model[2])
    converged = conductance.attribute(x, n_steps=4096, rule="trapezoid")
    return [float((conductance.attribute(x, n_steps=n, rule=rule) - converged).abs().sum()) for n in steps]


def test_left_and_right_are_first_order_and_the_trapezoid_second_order_on_a_smooth_path() -> None:
    steps = [8, 16, 32, 64]
    for rule, order in (("left", 2.0), ("right", 2.0), ("trapezoid", 4.0)):
        errors = _errors(rule, steps)
        ratios = [a / b for a, b in zip(errors, errors[1:])]
        assert all(abs(r - order) < 0.35 * order for r in ratios), (rule, ratios)
    left, right = _errors("left", steps), _errors("right", steps)
    assert all(t < min(a, b) for t, a, b in zip(_errors("trapezoid", steps), left, right))


@given(st.sampled_from(STEP_RULES), st.integers(1, 9), st.integers(1, 12))
def test_every_rule_is_independent_of_the_grid_points_per_pass(rule: str, per_pass: int, n_steps: int) -> None:
    model = conv_net(2)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mac = LayerMAC(targets.gradient_magnitude(model), [model[0], model[4]])
    one = mac.attribute(x, n_steps=n_steps, seed=3, rule=rule, internal_batch_size=2)
    batched = mac.attribute(x, n_steps=n_steps, seed=3, rule=rule, internal_batch_size=2 * per_pass)
    for a, b in zip(one, batched):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_the_rule_is_a_ranking_setting_recorded_and_checked() -> None:
    model = conv_net(3)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    left = rank_layers(model, [x], n_steps=6, progress=False)
    right = rank_layers(model, [x], n_steps=6, rule="right", progress=False)
    assert left.config["rule"] == "left" and right.config["rule"] == "right" and dict(left) != dict(right)
    assert "rule" not in rank_layers(model, [x], "ig", n_steps=3, progress=False).config
    with pytest.raises(ValueError, match="takes no rule="):
        RankSettings(method="gradnorm", rule="right")
    with pytest.raises(ValueError, match="rule must be one of"):
        RankSettings(rule="simpson")
    with pytest.raises(ValueError, match="rule must be one of"):
        LayerMAC(targets.output_sum(model), model[0]).attribute(x, n_steps=2, seed=0, rule="middle")
