"""The certificate of a step sum: each score's error estimate and the completeness gap at the input, against
direct computations and converged references; warnings and refusals."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net
from macattr import LayerPathConductance, LayerScores, UncertifiedError, rank_layers, targets
from macattr.accumulators import ERROR_SPREAD, STEP_RULES


def _along_the_line(model: nn.Module, layer: nn.Module, x: torch.Tensor, n_steps: int) -> tuple:
    """At α_j = j/N on the line 0 → x, one point per pass: the layer's values and gradients, the gradients at the
    input, and F at both ends."""
    values, grads, input_grads, outputs = [], [], [], []
    for alpha in torch.linspace(0, 1, n_steps + 1, dtype=torch.float64):
        captured = {}
        handle = layer.register_forward_hook(lambda m, a, out, captured=captured: captured.setdefault("y", out))
        try:
            point = (alpha * x).requires_grad_()
            score = targets.output_sum(model)(point)
            grad, input_grad = torch.autograd.grad(score.sum(), [captured["y"], point])
        finally:
            handle.remove()
        values.append(captured["y"].detach())
        grads.append(grad)
        input_grads.append(input_grad)
        outputs.append(score.detach())
    return values, grads, input_grads, outputs


def _step_gradient(before: torch.Tensor, after: torch.Tensor, rule: str) -> torch.Tensor:
    return {"left": before, "right": after, "trapezoid": (before + after) / 2}[rule]


@given(rule=st.sampled_from(STEP_RULES), n_steps=st.integers(1, 9), batch=st.integers(1, 12), seed=st.integers(0, 3))
def test_errors_and_the_input_sum_match_a_direct_computation_for_any_batching(
    rule: str, n_steps: int, batch: int, seed: int
) -> None:
    model = conv_net(seed)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    result = LayerPathConductance(targets.output_sum(model), model[2]).attribute(
        x, n_steps=n_steps, rule=rule, internal_batch_size=2 * batch, certify=True
    )
    values, grads, input_grads, outputs = _along_the_line(model, model[2], x, n_steps)
    differences = [(grads[j + 1] - grads[j]) * (values[j + 1] - values[j]) for j in range(n_steps)]
    drift, squares = sum(differences), sum(d.square() for d in differences)
    own = squares.sqrt() * ERROR_SPREAD
    expected = own if rule == "trapezoid" else drift.abs() / 2 + own
    torch.testing.assert_close(result.errors, expected, rtol=1e-9, atol=1e-12)
    plain = LayerPathConductance(targets.output_sum(model), model[2]).attribute(x, n_steps=n_steps, rule=rule)
    torch.testing.assert_close(result.attributions, plain, rtol=1e-10, atol=1e-12)  # certify changes nothing else
    steps = [(_step_gradient(input_grads[j], input_grads[j + 1], rule) * x / n_steps).flatten(1).sum(1)
             for j in range(n_steps)]  # fmt: skip
    torch.testing.assert_close(result.input_sum, sum(steps), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.input_scale, sum(s.abs() for s in steps), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.change, outputs[-1] - outputs[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", STEP_RULES)
def test_the_input_gap_vanishes_for_a_linear_model_and_shrinks_with_the_grid_otherwise(rule: str) -> None:
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    linear = conv_net(0, activation=nn.Identity)
    gap = LayerPathConductance(targets.output_sum(linear), linear[2]).attribute(x, n_steps=3, rule=rule, certify=True)
    assert float(gap.input_gap.max()) < 1e-12
    curved = conv_net(0, activation=lambda: nn.Softplus(beta=8))
    conductance = LayerPathConductance(targets.gradient_magnitude(curved), curved[2])
    coarse, fine = (
        float(conductance.attribute(x, n_steps=n, rule=rule, certify=True).input_gap.max()) for n in (4, 64)
    )
    assert fine < coarse / 4 and coarse > 1e-6


@pytest.mark.parametrize("rule", [*STEP_RULES, "gauss2", "gauss4", "gauss3-graded"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_layers_estimate_is_at_least_its_error_against_a_converged_reference(rule: str, seed: int) -> None:
    """MAC along the mask path (pixels revealed in steps, the sum converges slowly): the estimate bounds it,
    also for a segment rule, whose polygon cuts across the path's corners (18 masked pixels, 2 to 9 a segment)."""
    model = conv_net(seed, activation=nn.GELU)
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    options = dict(seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = rank_layers(model, [x], n_steps=4096, rule="trapezoid", **options)
        for n_steps in (8, 32, 128) if rule in STEP_RULES else (2, 4, 8):
            scores = rank_layers(model, [x], n_steps=n_steps, rule=rule, **options)
            for name in reference:
                error = abs(scores[name] - reference[name])
                assert scores.error(name) >= error, (name, n_steps, scores.error(name), error)


def _singular_start() -> tuple:
    """A LayerNorm right after the input: at the zero start its Jacobian is ~1/sqrt(eps)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16, bias=False), nn.LayerNorm(16, eps=1e-10), nn.Linear(16, 4)
    ).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, x


def test_a_singular_start_is_refused_under_strict_and_warned_otherwise() -> None:
    model, x = _singular_start()
    options = dict(target=0, n_steps=20, seed=0, progress=False, baselines=0.0)
    with pytest.raises(UncertifiedError, match="NOT within 10 %.*strict=True refuses"):
        rank_layers(model, [x], strict=True, **options)
    with pytest.warns(UserWarning, match="NOT within 10 %.*Remedies: rule='gauss2'"):
        scores = rank_layers(model, [x], **options)
    assert not scores.certificate().trusted and scores.certificate().worst_gap > 0.5
    assert isinstance(UncertifiedError("x"), ValueError)


def test_a_smooth_well_resolved_ranking_is_trusted_without_a_warning() -> None:
    model = conv_net(0, activation=nn.Identity)  # gradients constant along the path: every rule is exact
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = rank_layers(model, [x], n_steps=10, seed=0, progress=False, strict=True, target="sum")
    verdict = scores.certificate()
    assert verdict.trusted and verdict.worst_error < 1e-9 and verdict.worst_gap < 1e-9


@pytest.mark.parametrize("tolerance", [0, 1, 1.5, -0.1, True, "0.1", None])
def test_tolerance_outside_zero_to_one_is_refused(tolerance: object) -> None:
    model, x = _singular_start()
    with pytest.raises(ValueError, match="tolerance must be a relative error in \\(0, 1\\)"):
        rank_layers(model, [x], target=0, n_steps=2, progress=False, tolerance=tolerance)


def test_the_certificate_round_trips_through_the_scores_file(tmp_path) -> None:
    model, x = _singular_start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = rank_layers(model, [x], target=0, n_steps=8, seed=0, progress=False)
    path = scores.save(tmp_path / "scores.json")
    document = json.loads(path.read_text())
    assert [entry["error"] for entry in document["layers"]] == [scores.error(name) for name, _ in scores.ranked()]
    again = LayerScores.load(path)
    assert again.errors.tolist() == scores.errors.tolist() and again.input_gaps.tolist() == scores.input_gaps.tolist()
    assert again.certificate() == scores.certificate()


def test_scores_without_errors_say_so_and_bad_rows_are_refused() -> None:
    plain = LayerScores({"a": 1.0, "b": 2.0}, "mac", images=1, per_image=[[1.0, 2.0]])
    with pytest.raises(ValueError, match="carry no error estimate"):
        plain.error("a")
    with pytest.raises(ValueError, match="come together"):
        LayerScores({"a": 1.0}, "mac", images=1, per_image=[[1.0]], errors=[[0.1]])
    with pytest.raises(ValueError, match="shape of per_image"):
        LayerScores({"a": 1.0}, "mac", images=1, per_image=[[1.0]], errors=[[0.1, 0.2]], input_gaps=[0.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        LayerScores({"a": 1.0}, "mac", images=1, per_image=[[1.0]], errors=[[-0.1]], input_gaps=[0.0])


def _llama() -> tuple:
    """A 4-layer Llama (hidden 64, random weights, float64) and 4 sequences of 16 token embeddings."""
    from bench_networks import tiny_llama

    model = tiny_llama()
    ids = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    return model, model.get_input_embeddings()(ids).detach()


LLAMA_OPTIONS = dict(input_name="inputs_embeds", mask_dims="sequence", target=(15, 5), seed=0)


def test_a_llama_from_zero_tokens_is_named_singular_refused_and_not_converged_and_from_pad_tokens_is_not() -> None:
    from macattr import RankSettings, check_steps
    from macattr.baselines import token_embedding

    model, embeddings = _llama()
    with pytest.warns(UserWarning, match=r"singular: model\.layers\.0\.input_layernorm \(LlamaRMSNorm, eps 1e-06\)"):
        with pytest.raises(UncertifiedError, match="completeness gap at the input 100 %"):
            rank_layers(model, [embeddings], n_steps=50, rule="trapezoid", progress=False, strict=True, **LLAMA_OPTIONS)
    settings = RankSettings(n_steps=50, baselines=0.0, **LLAMA_OPTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = check_steps(model, [embeddings], settings, warn=False)
    assert not check.enough and "NOT converged" in check.summary()
    assert max(check.error, check.estimate, check.input_gap) > 0.5  # never "under 1 %"
    pad = token_embedding(model, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = rank_layers(model, [embeddings], n_steps=200, rule="trapezoid", baselines=pad, progress=False,
                             **LLAMA_OPTIONS)  # fmt: skip
    assert not any("singular" in str(w.message) for w in caught)
    assert scores.certificate().worst_gap < 0.05


def test_singular_normalizations_finds_each_kind_at_zero_and_leaves_no_hook() -> None:
    from macattr.baselines import mean_colour, mean_embedding, singular_normalizations, token_embedding

    torch.manual_seed(0)
    layers = nn.ModuleDict({"layer": nn.LayerNorm(8), "rms": nn.RMSNorm(8, eps=1e-6), "group": nn.GroupNorm(2, 8)})

    def run(x: torch.Tensor) -> None:
        layers["layer"](x), layers["rms"](x), layers["group"](x[..., None])

    zero = torch.zeros(3, 8)
    found = singular_normalizations(layers, lambda: run(zero))
    assert [(f.name, f.kind, f.share) for f in found] == [("layer", "LayerNorm", 1.0), ("rms", "RMSNorm", 1.0),
                                                          ("group", "GroupNorm", 1.0)]  # fmt: skip
    assert singular_normalizations(layers, lambda: run(torch.randn(3, 8))) == []
    one_row = torch.randn(3, 8)
    one_row[1] = 0.0
    assert [f.share for f in singular_normalizations(layers, lambda: run(one_row))][:2] == [1 / 3, 1 / 3]
    with pytest.raises(RuntimeError, match="boom"):
        singular_normalizations(layers, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert all(not m._forward_pre_hooks for m in layers.modules())
    table = nn.Embedding(5, 8)
    assert torch.equal(token_embedding(table, 4), table.weight[4].detach())
    torch.testing.assert_close(mean_embedding(table), table.weight.detach().mean(0))
    for bad in (5, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"token_id must be a token index in \[0, 4\]"):
            token_embedding(table, bad)
    with pytest.raises(TypeError, match="get_input_embeddings"):
        mean_embedding(nn.Linear(2, 2))
    images = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(mean_colour(images), images.mean(dim=(0, 2, 3)).reshape(1, 3, 1, 1))
    with pytest.raises(TypeError, match=r"images must be a float tensor \(N, C, H, W\)"):
        mean_colour(images[0])


class _PatchNormNet(nn.Module):
    """Bias-free 2 × 2 patch embedding, a LayerNorm over each patch's channels, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.norm, self.head = nn.Conv2d(3, 8, 2, stride=2, bias=False), nn.LayerNorm(8), nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(x).permute(0, 2, 3, 1)).flatten(1))


def test_the_data_s_own_flat_patches_are_not_called_a_singular_start() -> None:
    """A zero patch in the image itself is singular at both ends of the path: no warning for the baseline."""
    model = _PatchNormNet().double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    x[..., :2, :2] = 0.0
    for baseline, singular in ((0.0, True), (0.5, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rank_layers(model, [x], target=0, patch_size=2, n_steps=4, baselines=baseline, progress=False)
        assert any("singular: norm (LayerNorm" in str(w.message) for w in caught) is singular, baseline


def test_the_ramp_reveals_each_cell_alone_along_a_straight_segment_from_start_to_end() -> None:
    from macattr.paths import MaskAttributionPath

    path = MaskAttributionPath(mask_ratio=0.5, mask_dims="sequence", ramp=True, seed=0)
    x, base = torch.ones(1, 8, 3, dtype=torch.float64), torch.zeros(1, 8, 3, dtype=torch.float64)
    alphas = torch.linspace(0.5, 1.0, 401, dtype=torch.float64)
    weights = path.bind((x,), (base,))(alphas)[0].reshape(len(alphas), 8, 3)[..., 0]  # (S, tokens)
    assert sorted(weights[0].tolist()) == [0.0] * 4 + [1.0] * 4 and weights[-1].tolist() == [1.0] * 8
    moving = ((weights > 0) & (weights < 1)).sum(1)
    assert int(moving.max()) == 1  # one token at a time
    steps = weights.diff(dim=0).abs().sum(1)
    torch.testing.assert_close(steps, torch.full_like(steps, 8 * 0.5 / 400 * 8 / 8))  # constant speed: K Δα
    with pytest.raises(ValueError, match="ramp and cut"):
        MaskAttributionPath(ramp=True, cut=True)


def test_a_llama_from_pad_tokens_along_the_ramp_converges_at_second_order_and_is_certified() -> None:
    from macattr.baselines import token_embedding

    model, embeddings = _llama()
    options = dict(LLAMA_OPTIONS, ramp=True, rule="trapezoid", baselines=token_embedding(model, 0), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = rank_layers(model, [embeddings], n_steps=1600, **options)
    largest = max(abs(v) for v in reference.values())
    counted = [n for n in reference if abs(reference[n]) >= 1e-6 * largest]
    errors = {}
    for n_steps in (48, 96):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped token embedding; strict=True refuses what is not certified
            scores = rank_layers(model, [embeddings], n_steps=n_steps, strict=True, **options)
        errors[n_steps] = max(abs(scores[n] - reference[n]) / abs(reference[n]) for n in counted)
        assert all(scores.error(n) >= abs(scores[n] - reference[n]) - 1e-12 * largest for n in counted)
    assert errors[96] < 0.01 and 3 < errors[48] / errors[96] < 5  # about 4: second order
    segment_options = dict(options, rule="gauss3")
    for n_steps, within in ((8, 0.005), (16, 0.0005)):  # 8 masked tokens: 1 and 2 segments each, 33 and 65 passes
        scores = rank_layers(model, [embeddings], n_steps=n_steps, strict=True, **segment_options)
        assert max(abs(scores[n] - reference[n]) / abs(reference[n]) for n in counted) < within
        assert all(scores.error(n) >= abs(scores[n] - reference[n]) - 1e-12 * largest for n in counted)


def test_the_new_arguments_refuse_bad_values_by_name() -> None:
    from macattr import LayerMAC
    from macattr.paths import MaskAttributionPath

    model, x = _singular_start()
    with pytest.raises(TypeError, match="strict must be True or False"):
        rank_layers(model, [x], target=0, n_steps=2, progress=False, strict="yes")
    conv = conv_net(0)
    with pytest.raises(TypeError, match="certify must be True or False"):
        LayerMAC(targets.output_sum(conv), conv[0]).attribute(torch.rand(1, 3, 4, 4, dtype=torch.float64),
                                                              n_steps=2, certify="yes")  # fmt: skip
    with pytest.raises(TypeError, match="ramp must be True or False"):
        MaskAttributionPath(ramp="yes")
    with pytest.raises(ValueError, match="sources must name the source of each row"):
        LayerScores({"a": 2.0}, "mac", images=2, per_image=[[1.0], [1.0]], sources=["p"])
    scores = LayerScores({"a": 2.0}, "mac", images=2, per_image=[[1.0], [1.0]], sources=["p", "q"])
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\)"):
        scores.lower_bounds(level=1.5)


def test_check_steps_ranks_the_same_images_at_n_and_n_over_2_from_an_iterator_or_a_shuffling_loader() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from macattr import RankSettings, check_steps

    model = conv_net(0).float()
    batches = [torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    settings = RankSettings(n_steps=8)
    listed = check_steps(model, batches, settings, k=1, warn=False)
    streamed = check_steps(model, iter(batches), settings, k=1, warn=False)
    assert streamed.error == listed.error and streamed.images == listed.images == 4
    torch.manual_seed(0)
    shuffled = DataLoader(TensorDataset(torch.cat(batches)), batch_size=2, shuffle=True)
    torch.manual_seed(0)
    order = [b[0] for b in shuffled]  # the batches this seed draws
    torch.manual_seed(0)
    assert check_steps(model, shuffled, settings, k=1, warn=False).error == pytest.approx(
        check_steps(model, order, settings, k=1, warn=False).error, rel=1e-12
    )
