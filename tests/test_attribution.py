"""Attribution classes against Captum and against the mathematics of DESIGN.md §1."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import InternalInfluence, LayerConductance
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net, residual_net
from macattr import LayerMAC, LayerPathConductance, LayerPathInternalInfluence, LinearPath, MaskAttributionPath, targets


def _images(seed: int, n: int = 2, size: int = 6, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@given(
    seed=st.integers(0, 10_000),
    depth=st.integers(2, 4),
    layer_index=st.integers(0, 3),
    n_steps=st.integers(1, 12),
    activation=st.sampled_from([nn.Tanh, nn.ReLU, nn.Softplus]),
)
def test_linear_path_conductance_equals_captum_trapezoid(seed, depth, layer_index, n_steps, activation) -> None:
    model = conv_net(seed, depth=depth, activation=activation)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    layer = convs[layer_index % len(convs)]
    x, baseline = _images(seed), _images(seed + 1)
    forward = targets.output_sum(model)
    ours = LayerPathConductance(forward, layer, path=LinearPath()).attribute(x, baselines=baseline, n_steps=n_steps)
    theirs = LayerConductance(forward, layer).attribute(
        x, baselines=baseline, n_steps=n_steps, method="riemann_trapezoid"
    )
    # Captum rounds its grid to float32; the float64 difference is that rounding, not the method.
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


@given(seed=st.integers(0, 10_000), n_steps=st.integers(2, 12), layer_index=st.integers(0, 2))  # Captum needs n ≥ 2
def test_linear_path_internal_influence_equals_captum_riemann_left(seed, n_steps, layer_index) -> None:
    model = conv_net(seed)
    layer = [m for m in model if isinstance(m, nn.Conv2d)][layer_index]
    x = _images(seed)
    forward = targets.gradient_magnitude(model)
    ours = LayerPathInternalInfluence(forward, layer).attribute(x, n_steps=n_steps)
    theirs = InternalInfluence(forward, layer).attribute(x, n_steps=n_steps, method="riemann_left")
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("layer_name", ["linear1", "relu", "linear2"])
def test_captum_basic_multilayer_model_with_class_target(layer_name: str, to_input: bool) -> None:
    torch.manual_seed(0)
    model = BasicModel_MultiLayer().double()
    layer = getattr(model, layer_name)
    x = torch.randn(4, 3, dtype=torch.float64)
    ours = LayerPathConductance(model, layer).attribute(
        x, target=[0, 1, 0, 1], n_steps=20, attribute_to_layer_input=to_input
    )
    theirs = LayerConductance(model, layer).attribute(
        x, target=[0, 1, 0, 1], n_steps=20, method="riemann_trapezoid", attribute_to_layer_input=to_input
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_captum_multi_input_model_with_additional_forward_args() -> None:
    torch.manual_seed(0)
    model = BasicModel_MultiLayer_MultiInput().double()
    x1, x2, x3 = (torch.randn(3, 3, dtype=torch.float64) for _ in range(3))
    scale = 2
    ours = LayerPathConductance(model, model.model.linear2).attribute(
        (x1, x2), baselines=(0.5, 0.0), additional_forward_args=(x3, scale), target=1, n_steps=16
    )
    theirs = LayerConductance(model, model.model.linear2).attribute(
        (x1, x2),
        baselines=(0.5, 0.0),
        additional_forward_args=(x3, scale),
        target=1,
        n_steps=16,
        method="riemann_trapezoid",
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_captum_convnet_with_integer_target_and_internal_batches() -> None:
    torch.manual_seed(0)
    model = BasicModel_ConvNet().double()
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64)
    for layer in (model.conv1, model.conv2, model.fc1):
        ours = LayerPathConductance(model, layer).attribute(x, target=1, n_steps=10, internal_batch_size=9)
        theirs = LayerConductance(model, layer).attribute(x, target=1, n_steps=10, method="riemann_trapezoid")
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


@given(seed=st.integers(0, 10_000), n_steps=st.integers(1, 30), ratio=st.sampled_from([0.25, 0.5, 1.0]))
def test_completeness_is_exact_where_f_is_linear_in_the_layer(seed, n_steps, ratio) -> None:
    model = residual_net(seed)
    x = _images(seed, size=8)
    for path in (LinearPath(), MaskAttributionPath(mask_ratio=ratio, seed=seed)):
        _, delta = LayerPathConductance(targets.output_sum(model), model.tail, path=path).attribute(
            x, n_steps=n_steps, return_convergence_delta=True
        )
        assert delta.abs().max() < 1e-10


@given(seed=st.integers(0, 10_000))
def test_completeness_error_shrinks_with_n_steps_when_the_sigmoid_is_resolved(seed) -> None:
    model = residual_net(seed)
    x = _images(seed, n=1, size=6)
    forward = targets.gradient_magnitude(model)
    errors = []
    for n_steps in (4, 16, 64, 256):
        _, delta = LayerMAC(forward, model.head).attribute(
            x, n_steps=n_steps, sharpness=10.0, seed=seed, return_convergence_delta=True
        )
        errors.append(delta.abs().item())
    # the left-point rule is first order: 4 times the steps, about a quarter of the error
    for coarse, fine in zip(errors, errors[1:]):
        assert fine < 0.3 * coarse


@given(seed=st.integers(0, 10_000), n_steps=st.integers(1, 15), chunk=st.integers(1, 7))
def test_multi_layer_sweep_equals_one_layer_calls_and_batching_changes_nothing(seed, n_steps, chunk) -> None:
    model = residual_net(seed)
    layers = [model.head, model.blocks[0][0], model.blocks[1][2], model.tail]
    x = _images(seed, n=2)
    forward = targets.gradient_magnitude(model)
    together = LayerMAC(forward, layers).attribute(x, n_steps=n_steps, seed=seed, internal_batch_size=2 * chunk)
    for layer, joint in zip(layers, together):
        alone = LayerMAC(forward, layer).attribute(x, n_steps=n_steps, seed=seed)
        torch.testing.assert_close(joint, alone, rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 10_000), n_steps=st.integers(1, 10))
def test_batch_independence(seed, n_steps) -> None:
    model = residual_net(seed)
    x = _images(seed, n=3)
    thresholds = MaskAttributionPath(seed=seed).pixel_thresholds(x)
    forward = targets.gradient_magnitude(model)
    batch = LayerMAC(forward, model.blocks[0][0]).attribute(x, n_steps=n_steps, thresholds=thresholds)
    for i in range(3):
        alone = LayerMAC(forward, model.blocks[0][0]).attribute(
            x[i : i + 1], n_steps=n_steps, thresholds=thresholds[i : i + 1]
        )
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 10_000))
def test_same_seed_same_result_other_seed_other_result(seed) -> None:
    model = residual_net(seed)
    x = _images(seed)
    attr = LayerMAC(targets.output_mean(model), model.blocks[1][0])
    a = attr.attribute(x, n_steps=8, seed=seed)
    b = attr.attribute(x, n_steps=8, seed=seed)
    c = attr.attribute(x, n_steps=8, seed=seed + 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_hard_path_conductance_is_the_limit_of_the_sigmoid_path() -> None:
    model = residual_net(0)
    x = _images(0, n=1, size=4)
    # thresholds halfway between grid points, so no grid point sits on a step
    n_steps = 16
    thresholds = (0.5 + (torch.randperm(16, generator=torch.Generator().manual_seed(0)) + 0.5) / 32).reshape(4, 4)
    forward = targets.gradient_magnitude(model)
    hard = LayerMAC(forward, model.blocks[0][0]).attribute(
        x, n_steps=n_steps, sharpness=math.inf, thresholds=thresholds.double()
    )
    errors = [
        (LayerMAC(forward, model.blocks[0][0]).attribute(x, n_steps=n_steps, sharpness=d, thresholds=thresholds) - hard)
        .abs()
        .max()
        .item()
        for d in (1e2, 1e3, 1e5)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-10


class TwoHeads(nn.Module):
    """A layer with a tuple output: (features, gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple:
        return self.a(x), torch.sigmoid(self.b(x))


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = TwoHeads()
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.heads(x)
        return self.out(features * gate)


def test_tuple_output_layer_gives_a_tuple_with_completeness() -> None:
    torch.manual_seed(0)
    model = TupleNet().double()
    x = _images(0)
    attr, delta = LayerPathConductance(targets.output_sum(model), model.heads).attribute(
        x, n_steps=200, return_convergence_delta=True
    )
    assert isinstance(attr, tuple) and len(attr) == 2
    assert attr[0].shape == attr[1].shape == (2, 4, 6, 6)
    assert delta.abs().max() < 1e-3


def test_in_place_overwrite_of_a_hooked_output_gives_the_out_of_place_result() -> None:
    torch.manual_seed(0)
    in_place = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(5, 3, 3, padding=1))
    out_of_place = nn.Sequential(in_place[0], nn.ReLU(), in_place[2])
    x = _images(0, dtype=torch.float32)
    a = LayerMAC(targets.output_sum(in_place), in_place[0]).attribute(x, n_steps=10, seed=0)
    b = LayerMAC(targets.output_sum(out_of_place), out_of_place[0]).attribute(x, n_steps=10, seed=0)
    torch.testing.assert_close(a, b)


def test_autocast_bfloat16_stays_close_to_float32() -> None:
    model = residual_net(0).float()
    x = _images(0, size=8, dtype=torch.float32)
    forward = targets.output_sum(model)
    exact = LayerMAC(forward, model.blocks[0][0]).attribute(x, n_steps=16, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = LayerMAC(forward, model.blocks[0][0]).attribute(x, n_steps=16, seed=0)
    assert low.dtype == torch.float32
    assert (low - exact).abs().sum() < 0.1 * exact.abs().sum()


def test_float32_matches_float64() -> None:
    model = residual_net(0)
    x = _images(0)
    forward = targets.gradient_magnitude(model)
    double = LayerMAC(forward, model.tail).attribute(x, n_steps=20, seed=0)
    single = LayerMAC(targets.gradient_magnitude(model.float()), model.tail).attribute(x.float(), n_steps=20, seed=0)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), double, rtol=1e-3, atol=1e-4)
