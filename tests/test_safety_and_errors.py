"""The model is left as found, and bad input is refused with a message naming the argument."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import residual_net
from macattr import LayerMAC, LayerPathConductance, LayerPathInternalInfluence, rank_layers, targets


def _state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
    )


def _prepared_model() -> nn.Module:
    model = residual_net(0)
    model.blocks[0].train()
    model.blocks[1].eval()
    model.head.weight.requires_grad_(False)
    model.tail(torch.rand(1, 6, 4, 4, dtype=torch.float64)).sum().backward()  # leaves tail.*.grad set
    return model


def _same(a: tuple, b: tuple) -> bool:
    grads_equal = all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a[2], b[2])
    )
    return a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and grads_equal


def test_attribution_leaves_modes_flags_grads_and_hooks_unchanged() -> None:
    model = _prepared_model()
    before = _state(model)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    LayerMAC(targets.gradient_magnitude(model), [model.head, model.blocks[0][0], model.tail]).attribute(x, n_steps=4)
    assert _same(before, _state(model))


class Explodes(nn.Module):
    def __init__(self, model: nn.Module, after_calls: int) -> None:
        super().__init__()
        self.model, self.after_calls, self.calls = model, after_calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after_calls:
            self.model.train()  # a forward that changes the model, then fails
            for p in self.model.parameters():
                p.requires_grad_(True)
            raise RuntimeError("boom")
        return targets.output_sum_of(self.model(x))


@pytest.mark.parametrize("after_calls", [0, 3])
def test_state_is_restored_when_the_forward_function_raises(after_calls: int) -> None:
    model = _prepared_model()
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        LayerMAC(Explodes(model, after_calls), [model.head, model.tail]).attribute(
            torch.rand(1, 3, 6, 6, dtype=torch.float64), n_steps=6, internal_batch_size=1
        )
    assert _same(before, _state(model))


def test_user_inputs_are_not_touched() -> None:
    model = residual_net(0)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    copy = x.clone()
    LayerMAC(targets.output_sum(model), model.head).attribute(x, n_steps=3)
    assert not x.requires_grad and x.grad is None and torch.equal(x, copy)


def test_works_under_no_grad_context() -> None:
    model = residual_net(0)
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    expected = LayerMAC(targets.output_sum(model), model.head).attribute(x, n_steps=3, seed=0)
    with torch.no_grad():
        got = LayerMAC(targets.output_sum(model), model.head).attribute(x, n_steps=3, seed=0)
    torch.testing.assert_close(got, expected)


X = torch.rand(2, 3, 6, 6, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"n_steps": 0}, ValueError, "n_steps must be an integer >= 1"),
        ({"n_steps": 2.5}, TypeError, "n_steps"),
        ({"mask_ratio": 0.0}, ValueError, r"mask_ratio must be in \(0.0, 1.0\]"),
        ({"mask_ratio": 1.01}, ValueError, "mask_ratio"),
        ({"sharpness": 0}, ValueError, "sharpness"),
        ({"sharpness": -math.inf}, ValueError, "sharpness"),
        ({"patch_size": 4}, ValueError, "patch_size must divide"),
        ({"thresholds": torch.rand(5, 6)}, ValueError, "thresholds must have shape"),
        ({"thresholds": torch.rand(3, 6, 6)}, ValueError, "thresholds must have shape"),
        ({"thresholds": -torch.rand(6, 6)}, ValueError, r"thresholds must lie in \[0, 1\]"),
        ({"baselines": torch.rand(2, 3, 5, 6)}, ValueError, "baselines.*does not broadcast"),
        ({"baselines": (0.0, 1.0)}, ValueError, "one entry per input"),
        ({"baselines": "zero"}, TypeError, "baselines"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"target": 7}, ValueError, "target"),
    ],
)
def test_bad_arguments_to_attribute_are_refused(kwargs: dict, error: type, words: str) -> None:
    model = residual_net(0)
    with pytest.raises(error, match=words):
        LayerMAC(targets.output_sum(model), model.head).attribute(X, **{"n_steps": 2, **kwargs})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs_are_refused(bad: float) -> None:
    model = residual_net(0)
    x = X.clone()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="inputs must be finite"):
        LayerMAC(targets.output_sum(model), model.head).attribute(x)
    with pytest.raises(ValueError, match="baselines.*finite"):
        LayerMAC(targets.output_sum(model), model.head).attribute(X, baselines=x)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_model_with_non_finite_weights_is_refused_naming_the_tensor(bad: float) -> None:
    model = residual_net(0)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"'head.weight' \(Conv2d\) holds 1 NaN or Inf values"):
        rank_layers(model, [X], n_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"'head.weight' \(Conv2d\) holds 1 NaN"):
        LayerMAC(targets.output_sum(model), model.head).attribute(X, n_steps=2)


@pytest.mark.filterwarnings("ignore::macattr.UncertifiedWarning")
def test_a_buffer_may_hold_an_attention_masks_minus_inf_but_not_nan() -> None:
    model = residual_net(0)
    model.head.register_buffer("mask", torch.full((2,), -math.inf))
    assert len(rank_layers(model, [X], n_steps=2, progress=False)) > 0
    model.head.mask[0] = math.nan
    with pytest.raises(ValueError, match="'head.mask'"):
        rank_layers(model, [X], n_steps=2, progress=False)


@pytest.mark.filterwarnings("ignore:the model behind forward_func is unknown")
def test_bad_inputs_types_are_refused() -> None:
    model = residual_net(0)
    with pytest.raises(TypeError, match="inputs"):
        LayerMAC(targets.output_sum(model), model.head).attribute([X])
    with pytest.raises(TypeError, match="floating-point"):
        LayerMAC(targets.output_sum(model), model.head).attribute(X.long())
    with pytest.raises(ValueError, match="batch size"):
        LayerPathConductance(lambda a, b: a.sum((1, 2, 3)), nn.Identity()).attribute((X, X[:1]))


@pytest.mark.filterwarnings("ignore:the model behind forward_func is unknown")
def test_bad_layers_are_refused() -> None:
    model = residual_net(0)
    forward = targets.output_sum(model)
    with pytest.raises(ValueError, match="not part of the model"):
        LayerMAC(forward, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="layer must be"):
        LayerMAC(forward, "head")
    with pytest.raises(TypeError, match="layer must be"):
        LayerMAC(forward, [])
    with pytest.raises(ValueError, match="more than once"):
        LayerMAC(forward, [model.head, model.head])
    with pytest.raises(ValueError, match="did not run during the forward pass"):
        LayerMAC(lambda x: targets.output_sum_of(model(x)), nn.Conv2d(3, 3, 1)).attribute(X, n_steps=2)
    with pytest.raises(TypeError, match="forward_func must be callable"):
        LayerMAC(3, model.head)
    with pytest.raises(TypeError, match="path"):
        LayerPathConductance(forward, model.head, path="linear")


@pytest.mark.filterwarnings("ignore:the model behind forward_func is unknown")
def test_forward_function_must_return_one_scalar_per_sample() -> None:
    model = residual_net(0)
    with pytest.raises(ValueError, match="one scalar per sample"):
        LayerMAC(model, model.head).attribute(X, n_steps=2)
    with pytest.raises(ValueError, match="one scalar per sample"):
        LayerMAC(lambda x: model(x).sum(), model.head).attribute(X, n_steps=2)


@pytest.mark.filterwarnings("ignore:the model behind forward_func is unknown")
def test_forward_without_autograd_is_refused() -> None:
    model = residual_net(0)

    def detached(x: torch.Tensor) -> torch.Tensor:
        return targets.output_sum_of(model(x)).detach()

    with pytest.raises(ValueError, match="does not depend on its inputs through autograd"):
        LayerMAC(detached, model.head).attribute(X, n_steps=2)


class Reuses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return targets.output_sum_of(self.conv(self.conv(x)))


def test_a_module_called_twice_is_a_clear_error() -> None:
    model = Reuses().double()
    before = _state(model)
    with pytest.raises(ValueError, match="runs more than once in one forward pass"):
        LayerMAC(model, model.conv).attribute(X, n_steps=2)
    assert _same(before, _state(model))


class IntegerBranch(nn.Module):
    """A layer whose only output is an integer tensor (class indices), beside a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 1)
        self.argmax = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)[:, 0] + self.argmax(x.argmax(1)).to(x.dtype)


def test_a_layer_without_floating_point_output_is_a_clear_error() -> None:
    model = IntegerBranch()
    before = _state(model)
    with pytest.raises(ValueError, match=r"layer 'argmax' has no floating-point output"):
        LayerPathConductance(model, model.argmax).attribute(torch.rand(2, 3), n_steps=2)
    assert _same(before, _state(model))


def test_internal_influence_has_no_convergence_delta() -> None:
    model = residual_net(0)
    with pytest.raises(TypeError, match="return_convergence_delta"):  # as Captum's LayerInternalInfluence
        LayerPathInternalInfluence(targets.output_sum(model), model.head).attribute(X, return_convergence_delta=True)
    assert not LayerPathInternalInfluence(targets.output_sum(model), model.head).has_convergence_delta()
