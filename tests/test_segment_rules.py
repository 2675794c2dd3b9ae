"""Segment rules (``gauss<m>``): exact where the integrand is a polynomial, Captum's integral on smooth paths,
the ramp's integral on an aligned grid, any batching, the certificate, and the settings that carry them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import LayerConductance
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net
from macattr import LayerMAC, LayerPathConductance, RankSettings, rank_layers, targets
from macattr.accumulators import ConductanceSum
from macattr.paths import LinearPath, MaskAttributionPath
from macattr.ranking.batches import image_seed
from macattr.segments import PolygonalPath, SegmentRule, aligned_grid, points_per_image, resolves_stretches
from macattr.vocabulary import SEGMENT_RULES

PLAIN_RULES = [rule for rule in SEGMENT_RULES if not rule.endswith("graded")]


class Cubic(nn.Module):
    """``F(x) = Σ_i a_i (W x)_i³``: along the line the layer ``W x`` moves linearly and ``∂F/∂y = 3 a y²``."""

    def __init__(self, seed: int, width: int = 4) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(3, width).double()
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(width, 3, generator=generator, dtype=torch.float64))
            self.linear.bias.copy_(torch.randn(width, generator=generator, dtype=torch.float64))
        self.a = torch.randn(width, generator=generator, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a * self.linear(x) ** 3).sum(1)


@settings(deadline=None, max_examples=25)
@given(rule=st.sampled_from(PLAIN_RULES), n_steps=st.integers(1, 5), seed=st.integers(0, 50))
def test_a_cubic_along_the_line_is_integrated_exactly(rule: str, n_steps: int, seed: int) -> None:
    """``∫ 3 a y² dy = a (y(1)³ − y(0)³)`` per neuron: a degree-2 integrand, exact for every m ≥ 2."""
    model = Cubic(seed)
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    base = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 2))
    ours = LayerPathConductance(model, model.linear).attribute(x, base, n_steps=n_steps, rule=rule)
    with torch.no_grad():
        exact = model.a * (model.linear(x) ** 3 - model.linear(base) ** 3)
    torch.testing.assert_close(ours, exact, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("rule", ["gauss2", "gauss3", "gauss4"])
def test_on_a_smooth_network_it_agrees_with_captums_integral_at_a_fraction_of_the_points(rule: str) -> None:
    model = conv_net(0)
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    forward = targets.output_sum(model)
    coarse, fine = (LayerConductance(forward, model[2]).attribute(x, n_steps=n, method="riemann_trapezoid").detach()
                    for n in (2000, 4000))  # fmt: skip
    reference = 2 * fine - coarse  # Captum's sum is first order: Richardson's extrapolation leaves ~1e-10
    ours = LayerPathConductance(forward, model[2]).attribute(x, n_steps=4, rule=rule).detach()  # at most 21 points
    trapezoid = LayerPathConductance(forward, model[2]).attribute(x, n_steps=20, rule="trapezoid").detach()
    error, trapezoid_error = (float((a - reference).abs().max()) for a in (ours, trapezoid))
    assert error < 1e-6 * float(reference.abs().max()) and error < trapezoid_error / 30, (error, trapezoid_error)


def test_the_error_falls_at_high_order_with_the_segments() -> None:
    model = conv_net(1)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    conductance = LayerPathConductance(targets.output_sum(model), model[2])
    converged = conductance.attribute(x, n_steps=64, rule="gauss4")
    errors = [float((conductance.attribute(x, n_steps=n, rule="gauss2") - converged).abs().sum()) for n in (1, 2, 4)]
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8, errors  # order 4 at least: 16 per halving


@settings(deadline=None, max_examples=20)
@given(rule=st.sampled_from(SEGMENT_RULES), per_pass=st.integers(1, 11), n_steps=st.integers(1, 6))
def test_every_segment_rule_is_independent_of_the_grid_points_per_pass(rule: str, per_pass: int, n_steps: int) -> None:
    model = conv_net(2)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mac = LayerMAC(targets.gradient_magnitude(model), [model[0], model[4]])
    one = mac.attribute(x, n_steps=n_steps, seed=3, rule=rule, internal_batch_size=2)
    batched = mac.attribute(x, n_steps=n_steps, seed=3, rule=rule, internal_batch_size=2 * per_pass)
    for a, b in zip(one, batched):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_on_the_ramp_with_a_segment_per_token_the_last_layer_meets_completeness() -> None:
    """A quadratic network on the ramp: the polygon is the path, each segment's integrand a polynomial."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 1)).double()
    forward = lambda x: (model(x).squeeze(-1) ** 2).sum(1)  # noqa: E731  (N, T, D) → (N,)
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    path = MaskAttributionPath(mask_ratio=0.5, mask_dims="sequence", ramp=True, seed=[0, 1, 2])
    for n_steps in (4, 8):  # 4 masked tokens: one or two segments each
        attributions, delta = LayerPathConductance(forward, model[1], path=path).attribute(
            x, n_steps=n_steps, rule="gauss2", return_convergence_delta=True
        )
        assert float(delta.abs().max()) < 1e-10 * float(attributions.abs().sum())


@settings(deadline=None, max_examples=60)
@given(tokens=st.integers(1, 40), ratio=st.sampled_from([0.25, 0.5, 0.9, 1.0]), n_steps=st.integers(1, 60))
def test_the_grid_meets_every_corner_of_the_ramp_when_it_has_more_steps_than_corners(tokens: int, ratio: float,
                                                                                     n_steps: int) -> None:  # fmt: skip
    path = MaskAttributionPath(mask_ratio=ratio, mask_dims="sequence", ramp=True, seed=0)
    x = torch.ones(2, tokens, 3)
    start, end = path.interval()
    corners = [k / tokens for k in range(1, tokens) if start + 1e-12 < k / tokens < end - 1e-12]  # direct
    grid = aligned_grid(path, n_steps, (x,))
    assert len(grid) == n_steps + 1 and grid[0] == start and grid[-1] == end and bool((grid.diff() > 0).all())
    if len(corners) < n_steps:
        assert all(float((grid - c).abs().min()) < 1e-12 for c in corners)
        assert path.straight_between(grid, (x,))
    else:
        torch.testing.assert_close(grid, torch.linspace(start, end, n_steps + 1, dtype=torch.float64))
    sigmoid = aligned_grid(MaskAttributionPath(mask_ratio=ratio, seed=0), n_steps, (x,))  # no corners: equidistant
    torch.testing.assert_close(sigmoid, torch.linspace(start, end, n_steps + 1, dtype=torch.float64))


class _Multilinear(nn.Module):
    """F(x) = Π_t (1 + w·(A x_t + c)) over the tokens of x (N, T, 3): linear in each token's ``embed`` output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.score = nn.Linear(3, 6), nn.Linear(6, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + self.score(self.embed(x))).prod(dim=1)


def _token_by_token_scores(model: _Multilinear, x: torch.Tensor, path: MaskAttributionPath) -> torch.Tensor:
    """The embed layer's MAC score per sample (N,), computed directly: the ramp moves one token at a time, F is
    linear in that token's embedding, so its neurons' conductance is the gradient anywhere on the move times
    the move."""
    thresholds, _ = path.cell_thresholds(x)
    start, _ = path.interval()
    rows = []
    for sample, cell_thresholds in zip(x, thresholds):
        state = torch.zeros_like(sample)
        state[cell_thresholds <= start + 1e-12] = sample[cell_thresholds <= start + 1e-12]
        conductance = torch.zeros(x.shape[1], 6, dtype=x.dtype)
        for token in cell_thresholds.argsort().tolist():
            if cell_thresholds[token] <= start + 1e-12:
                continue
            halfway = state.clone()
            halfway[token] = sample[token] / 2
            y = model.embed(halfway[None]).detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad((1 + model.score(y)).prod(dim=1).sum(), y)
            change = model.embed(sample[token]) - model.embed(torch.zeros_like(sample[token]))
            conductance[token] = gradient[0, token] * change.detach()
            state[token] = sample[token]
        rows.append(conductance.abs().mean())
    return torch.stack(rows)


@pytest.mark.parametrize("rule", ["left", "trapezoid", "gauss2"])
def test_on_a_grid_meeting_the_ramps_corners_every_rule_is_exact_where_each_move_is_linear(rule: str) -> None:
    torch.manual_seed(3)
    model = _Multilinear().double()
    x = torch.randn(2, 10, 3, dtype=torch.float64) * 2  # 5 masked tokens: 4 corners inside the interval
    scores = rank_layers(model, [x], rule=rule, n_steps=7, mask_dims="sequence", ramp=True, target=0, seed=0,
                         layers=["embed"], progress=False)  # fmt: skip
    path = MaskAttributionPath(mask_dims="sequence", ramp=True).for_images([image_seed(0, i) for i in range(2)])
    expected = _token_by_token_scores(model, x, path)
    assert scores["embed"] == pytest.approx(float(expected.sum()), rel=1e-9)


def test_across_the_ramps_corners_the_estimate_covers_the_error_and_the_certificate_refuses() -> None:
    torch.manual_seed(3)
    model = _Multilinear().double()
    x = torch.randn(1, 4, 3, dtype=torch.float64) * 2  # 2 masked tokens, one corner inside the interval
    options = dict(mask_dims="sequence", ramp=True, target=0, seed=0, progress=False)
    reference = rank_layers(model, [x], rule="gauss4", n_steps=16, **options)
    for rule in ("trapezoid", "gauss2"):  # one step or segment: the corner inside it
        with pytest.warns(UserWarning, match="NOT within 10 %.*on the ramp: 5 grid points per masked cell"):
            scores = rank_layers(model, [x], rule=rule, n_steps=1, **options)
        for name in scores.names:
            assert abs(scores[name] - reference[name]) > 0.1 * abs(reference[name])  # the case is a real one
            assert scores.error(name) >= abs(scores[name] - reference[name])


def test_a_ramp_with_given_thresholds_has_its_corners_on_the_grid_too() -> None:
    torch.manual_seed(4)
    model = _Multilinear().double()
    x = torch.randn(1, 10, 3, dtype=torch.float64) * 2
    thresholds = (torch.randperm(10, generator=torch.Generator().manual_seed(1)).double() + 1) / 10
    path = MaskAttributionPath(mask_dims="sequence", ramp=True, thresholds=thresholds)
    scores = rank_layers(model, [x], path=path, rule="left", n_steps=7, target=0, layers=["embed"], progress=False)
    assert scores["embed"] == pytest.approx(float(_token_by_token_scores(model, x, path).sum()), rel=1e-9)


def test_per_sample_excluded_cells_leave_each_samples_answer_independent_of_its_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 8, 1)).double()
    x = torch.randn(3, 8, 3, dtype=torch.float64) * 2
    excluded = torch.zeros(3, 8, dtype=torch.bool)
    excluded[1, 6:], excluded[2, 5:] = True, True  # 8, 6 and 5 counted tokens: different corners

    def first_sample(rows: slice) -> torch.Tensor:
        path = MaskAttributionPath(mask_ratio=1.0, ramp=True, seed=[0, 1, 2][rows], mask_dims="sequence",
                                   exclude=excluded[rows])  # fmt: skip
        conductance = LayerPathConductance(model, model[0])
        return conductance.attribute(x[rows], torch.zeros_like(x[rows]), target=0, path=path, n_steps=16)[0]

    torch.testing.assert_close(first_sample(slice(0, 1)), first_sample(slice(0, 3)), rtol=1e-12, atol=1e-15)


class _Attention(nn.Module):
    """An embedding, two-head self-attention with a residual and LayerNorm, a GELU layer; x (N, T, 3) → (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attention = nn.Linear(3, 8), nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm, self.hidden, self.out = nn.LayerNorm(8), nn.Sequential(nn.Linear(8, 8), nn.GELU()), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.out(self.hidden(self.norm(h + self.attention(h, h, h, need_weights=False)[0]))).mean(1)


@pytest.mark.parametrize("rule, n_steps", [("trapezoid", 8), ("gauss2", 8), ("trapezoid", 4)])
def test_a_grid_that_does_not_resolve_the_ramps_stretches_never_understates_its_error(rule: str, n_steps: int) -> None:
    """8 tokens: one step (or segment) per token, or steps across the corners; the factor 1/8 understated these
    by up to 1.9 times."""
    options = dict(mask_dims="sequence", ramp=True, mask_ratio=1.0, target=0, progress=False,
                   layers=["embed", "attention", "norm", "hidden.0", "out"])  # fmt: skip
    for seed in (2, 4, 7):
        torch.manual_seed(seed)
        model = _Attention().double().eval()
        x = torch.randn(2, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
        reference = rank_layers(model, [x], rule="gauss4", n_steps=64, seed=seed, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = rank_layers(model, [x], rule=rule, n_steps=n_steps, seed=seed, **options)
        for name in scores.names:
            rounding = 1e-9 * abs(reference[name])  # a layer every rule gets exactly differs by float rounding
            assert scores.error(name) >= abs(scores[name] - reference[name]) - rounding, (seed, name)


def test_the_polygon_meets_the_path_at_its_corners_and_is_straight_between() -> None:
    path = MaskAttributionPath(mask_ratio=0.5, seed=0)
    x, base = torch.rand(1, 3, 4, 4, dtype=torch.float64), torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    polygon = PolygonalPath(path, 5)
    corners = polygon.breaks()
    assert corners[0] == 0.5 and corners[-1] == 1.0 and polygon.interval() == path.interval()
    on_path, on_polygon = (p.bind((x,), (base,)) for p in (path, polygon))
    torch.testing.assert_close(on_polygon(corners)[0], on_path(corners)[0], rtol=0, atol=0)
    middles = (corners[:-1] + corners[1:]) / 2
    expected = (on_path(corners[:-1])[0] + on_path(corners[1:])[0]) / 2
    torch.testing.assert_close(on_polygon(middles)[0], expected, rtol=1e-12, atol=1e-14)
    line = LinearPath()
    alphas = torch.rand(7, dtype=torch.float64)
    torch.testing.assert_close(PolygonalPath(line, 3).bind((x,), (base,))(alphas)[0],
                               line.bind((x,), (base,))(alphas)[0], rtol=1e-12, atol=1e-14)  # fmt: skip


@pytest.mark.parametrize("rule", SEGMENT_RULES)
def test_the_nodes_lie_inside_each_segment_and_the_weights_integrate_polynomials(rule: str) -> None:
    segment = SegmentRule.named(rule)
    positions = segment.positions().numpy()
    assert positions[0] == 0 and positions[-1] == 1 and np.all(np.diff(positions) > 0)
    u = np.concatenate([[0.0], 0.5 * (1 + np.polynomial.legendre.leggauss(segment.nodes)[0]), [1.0]])
    degree = segment.nodes + 1  # y = u^degree, g = u^(nodes - 2): the product's degree is 2m - 1 - 1 ≤ 2m - 1
    values, grads = torch.from_numpy(u**degree), torch.from_numpy(u ** (segment.nodes - 2))
    exact = degree / (degree + segment.nodes - 2)  # ∫ u^(m-2) · degree u^(degree-1) du
    assert abs(float(segment.node_sum(grads, values)) - exact) < 1e-12


def test_a_segment_rule_takes_its_points_per_image_and_the_ranking_records_it() -> None:
    model = conv_net(3)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    calls = []
    handle = model[0].register_forward_hook(lambda m, a, out: calls.append(out.shape[0]))
    try:
        LayerMAC(targets.gradient_magnitude(model), model[2]).attribute(x, n_steps=5, rule="gauss3", seed=0)
    finally:
        handle.remove()
    assert sum(calls) == 2 * points_per_image("gauss3", 5) == 2 * 21  # rows: 2 images at every point
    scores = rank_layers(model, [x], n_steps=5, rule="gauss3", progress=False)
    assert scores.config["rule"] == "gauss3" and scores.errors is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        left = rank_layers(model, [x], n_steps=5, progress=False)
    assert dict(left) != dict(scores)


def test_bad_segment_settings_are_refused_by_name() -> None:
    model = conv_net(4)
    with pytest.raises(ValueError, match="rule must be one of"):
        RankSettings(rule="gauss9")
    with pytest.raises(ValueError, match="rule='gauss2' places its own points.*method="):
        LayerPathConductance(targets.output_sum(model), model[0]).attribute(
            torch.rand(1, 3, 4, 4, dtype=torch.float64), n_steps=3, rule="gauss2", method="gausslegendre"
        )
    acc = ConductanceSum("gauss2")
    acc.update(torch.zeros(2, 1), torch.zeros(2, 1))  # the start and one node: a segment left open
    with pytest.raises(ValueError, match="merge only where a segment ends"):
        acc.merge(ConductanceSum("gauss2"))
    with pytest.raises(ValueError, match="rule must be one of"):
        SegmentRule.named("gauss1")
    ramp, tokens = MaskAttributionPath(ramp=True, mask_dims="sequence"), (torch.ones(1, 4, 2),)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1, got 0"):
        aligned_grid(ramp, 0, tokens)
    with pytest.raises(TypeError, match="points_per_step must be an integer >= 1"):
        resolves_stretches(ramp, torch.tensor([0.5, 1.0], dtype=torch.float64), tokens, 1.5)
    with pytest.raises(TypeError, match="n_segments must be an integer"):
        PolygonalPath(LinearPath(), 2.5)
