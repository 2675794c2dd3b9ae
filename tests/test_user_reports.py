"""What new users tripped on: train mode, execution order, shared modules, block-level candidates, device errors,
Captum conformance (methods, NoiseTunnel, argument order, tuple baselines, small internal batches)."""

from __future__ import annotations

import inspect
import json
import os
import stat
import warnings

import pytest
import torch
from captum.attr import InternalInfluence, LayerConductance, NoiseTunnel
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import residual_net
from macattr import (
    LayerMAC,
    LayerPathConductance,
    LayerPathInternalInfluence,
    LayerScores,
    freeze_except,
    rank_layers,
    targets,
)
from macattr.paths import QUADRATURES
from macattr.restoration import write_ram_files


class NormAndDropout(nn.Module):
    """conv → BatchNorm → dropout → conv: train mode would update statistics and drop activations."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.tail = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.drop(torch.relu(self.norm(self.head(x)))))


def _buffers(model: nn.Module) -> dict:
    return {name: b.clone() for name, b in model.named_buffers()}


def _same_buffers(model: nn.Module, before: dict) -> bool:
    return all(torch.equal(b, before[name]) for name, b in model.named_buffers())


def test_attribution_runs_in_eval_mode_leaves_buffers_alone_and_is_deterministic() -> None:
    torch.manual_seed(0)
    model = NormAndDropout().train()
    before = _buffers(model)
    x = torch.rand(2, 3, 8, 8)
    mac = LayerMAC(targets.output_sum(model), [model.head, model.tail])
    first = mac.attribute(x, n_steps=6, seed=0)
    second = mac.attribute(x, n_steps=6, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert _same_buffers(model, before) and int(model.norm.num_batches_tracked) == 0
    assert model.training and model.norm.training and model.drop.training
    scores = [rank_layers(model, [x], n_steps=4, progress=False) for _ in range(2)]
    assert dict(scores[0]) == dict(scores[1])
    assert _same_buffers(model, before) and model.training


def test_train_mode_switch_runs_in_train_mode_and_puts_the_buffers_back() -> None:
    torch.manual_seed(0)
    model = NormAndDropout().train()
    model.drop.p = 0.0  # batch statistics only, so that the comparison is deterministic
    before = _buffers(model)
    x = torch.rand(2, 3, 8, 8)
    in_train = LayerMAC(targets.output_sum(model), model.tail, train_mode=True).attribute(x, n_steps=4, seed=0)
    in_eval = LayerMAC(targets.output_sum(model), model.tail).attribute(x, n_steps=4, seed=0)
    assert not torch.allclose(in_train, in_eval)  # batch statistics differ from the running ones
    assert _same_buffers(model, before)
    rank_layers(model, [x], n_steps=4, progress=False, train_mode=True)
    assert _same_buffers(model, before) and model.training
    with pytest.raises(TypeError, match="train_mode must be True or False"):
        LayerMAC(targets.output_sum(model), model.tail, train_mode="yes")


class EndingFirst(nn.Module):
    """Registers its last layer first (as NAFNet registers ``ending``): depth must follow execution."""

    def __init__(self) -> None:
        super().__init__()
        self.ending = nn.Conv2d(4, 3, 3, padding=1)
        self.intro = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ending(torch.tanh(self.body(torch.tanh(self.intro(x)))))


def test_depth_order_is_the_order_layers_run(tmp_path) -> None:
    torch.manual_seed(0)
    model = EndingFirst()
    scores = rank_layers(model, [torch.rand(1, 3, 8, 8)], n_steps=4, progress=False)
    assert scores.names == ["intro", "body", "ending"] and scores.config["layers"] == scores.names
    _, _, index = write_ram_files(scores, tmp_path)
    assert [int(i) for i in index.read_text().split()] == [scores.names.index(n) for n, _ in scores.ranked()]
    uniform = rank_layers(model, [torch.rand(1, 3, 8, 8)], "uniform", progress=False)
    assert uniform.names == ["intro", "body", "ending"] and uniform.top_k(1) == ["body"]  # the middle of depth
    tied = LayerScores(dict.fromkeys(scores.names, 1.0), "mac")
    assert tied.top_k(1, ties="apart") == ["intro"] and tied.top_k(1) == scores.names  # one unit


class SharedBlock(nn.Module):
    """``shared`` runs twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.tail = nn.Conv2d(4, 3, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.shared(torch.tanh(self.shared(self.head(x)))))


def test_a_shared_module_is_skipped_by_name_with_one_warning(tmp_path) -> None:
    model = SharedBlock()
    with pytest.warns(UserWarning, match="skips 2 layer") as caught:
        scores = rank_layers(model, [torch.rand(1, 3, 8, 8)], n_steps=4, progress=False)
    assert len([w for w in caught if "skips" in str(w.message)]) == 1
    assert scores.names == ["head", "tail"]
    assert "runs 2 times" in scores.skipped["shared"] and "did not run" in scores.skipped["unused"]
    loaded = LayerScores.load(scores.save(tmp_path / "s.json"))
    assert loaded.skipped == scores.skipped
    with pytest.raises(ValueError, match="layer 'shared' runs more than once"):
        LayerMAC(targets.output_sum(model), model.shared).attribute(torch.rand(1, 3, 8, 8), n_steps=2, seed=0)
    with pytest.raises(ValueError, match=r"layer \['unused'\] did not run"):
        LayerMAC(targets.output_sum(model), model.unused).attribute(torch.rand(1, 3, 8, 8), n_steps=2, seed=0)


def test_freeze_except_warns_when_a_block_owns_few_of_its_parameters() -> None:
    class Block(nn.Module):  # a ConvNeXt/NAFNet-style block: owns a scale, its convs own the rest
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(8))
            self.conv = nn.Conv2d(16, 16, 3)

    model = nn.Sequential(Block(), nn.Conv2d(16, 16, 1))
    with pytest.warns(UserWarning, match=r"0 \(8 of 2,328\)"):
        trainable = freeze_except(model, ["0"])
    assert trainable.trainable == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze_except(model, ["1", "0.conv"])


def test_a_missing_cuda_device_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = nn.Sequential(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="no CUDA device is available"):
        rank_layers(model, [torch.rand(1, 3, 4, 4)], device="cuda", progress=False)


def test_files_get_the_permissions_of_an_ordinary_open(tmp_path) -> None:
    mask = os.umask(0o022)
    try:
        path = LayerScores({"a": 1.0}, "mac").save(tmp_path / "s.json")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# Captum conformance -------------------------------------------------------------------------------


def _captum_layer_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Softplus(), nn.Linear(4, 3)).double()


@given(st.integers(0, 500), st.sampled_from(QUADRATURES), st.integers(2, 12))
def test_every_captum_method_gives_captums_conductance_and_internal_influence(
    seed: int, method: str, n_steps: int
) -> None:
    model = _captum_layer_model(seed)
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    base = torch.rand(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    for layer in (model[0], model[2]):
        ours, delta = LayerPathConductance(model, layer).attribute(
            x, base, target=1, n_steps=n_steps, method=method, return_convergence_delta=True
        )
        theirs, their_delta = LayerConductance(model, layer).attribute(
            x, base, target=1, n_steps=n_steps, method=method, return_convergence_delta=True
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(delta, their_delta, rtol=1e-6, atol=1e-9)
        influence = LayerPathInternalInfluence(model, layer).attribute(x, base, 1, None, n_steps, method)
        their_influence = InternalInfluence(model, layer).attribute(x, base, target=1, n_steps=n_steps, method=method)
        torch.testing.assert_close(influence, their_influence, rtol=1e-6, atol=1e-9)


def test_the_mask_path_takes_only_the_trapezoid_rule() -> None:
    model = residual_net(0)
    with pytest.raises(ValueError, match="LayerMAC needs method='riemann_trapezoid'"):
        LayerMAC(targets.output_sum(model), model.tail).attribute(
            torch.rand(1, 3, 4, 4).double(), method="gausslegendre"
        )


def test_noise_tunnel_runs_over_every_macattr_class() -> None:
    model = residual_net(0)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    forward = targets.output_sum(model)
    for attribution, kwargs in [
        (LayerMAC(forward, model.tail), dict(n_steps=4, seed=0)),
        (LayerPathConductance(forward, model.tail), dict(n_steps=4)),
        (LayerPathInternalInfluence(forward, model.head), dict(n_steps=4)),
    ]:
        torch.manual_seed(0)
        smooth = NoiseTunnel(attribution).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.01, **kwargs)
        layer = attribution.layer
        assert smooth.shape == (2, *layer(torch.zeros(1, layer.in_channels, 6, 6).double()).shape[1:])
    torch.manual_seed(0)
    _, delta = NoiseTunnel(LayerMAC(forward, model.tail)).attribute(
        x, nt_samples=2, stdevs=0.01, n_steps=4, seed=0, return_convergence_delta=True
    )
    assert delta.shape == (4,) and delta.abs().max() < 1e-9  # completeness at the last layer, every noisy copy


def test_attribute_takes_captums_arguments_in_captums_order() -> None:
    shared = ["self", "inputs", "baselines", "target", "additional_forward_args", "n_steps", "method",
              "internal_batch_size", "return_convergence_delta", "attribute_to_layer_input"]  # fmt: skip
    assert list(inspect.signature(LayerConductance.attribute).parameters)[: len(shared)] == shared
    for cls in (LayerPathConductance, LayerMAC):
        assert list(inspect.signature(cls.attribute).parameters)[: len(shared)] == shared, cls
    influence = [p for p in inspect.signature(InternalInfluence.attribute).parameters if p != "grad_kwargs"]
    assert list(inspect.signature(LayerPathInternalInfluence.attribute).parameters) == [*influence, "path"]
    options = inspect.signature(LayerMAC.attribute).parameters
    assert options["path"].kind is inspect.Parameter.KEYWORD_ONLY


def test_baselines_none_means_zeros_for_every_input_of_a_tuple() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (self.a(x) * self.b(y)).sum(1)

    model = TwoInputs().double()
    x, y = torch.rand(2, 3).double(), torch.rand(2, 4).double()
    implicit = LayerPathConductance(model, model.a).attribute((x, y), n_steps=5)
    explicit = LayerPathConductance(model, model.a).attribute((x, y), (torch.zeros(1, 3), torch.zeros(1, 4)), n_steps=5)
    torch.testing.assert_close(implicit, explicit)
    torch.testing.assert_close(LayerPathConductance(model, model.a).attribute((x, y), 0.0, n_steps=5), explicit)


@given(st.integers(0, 300), st.integers(1, 4))
def test_an_internal_batch_smaller_than_the_batch_splits_the_samples(seed: int, group: int) -> None:
    model = residual_net(seed)
    x = torch.rand(5, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    mac = LayerMAC(targets.output_sum(model), [model.head, model.tail])
    whole, whole_delta = mac.attribute(x, n_steps=5, seed=seed, return_convergence_delta=True)
    split, split_delta = mac.attribute(
        x, n_steps=5, seed=seed, internal_batch_size=group, return_convergence_delta=True
    )
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(whole_delta, split_delta):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_the_scores_file_records_skipped_layers_and_the_checkpoint_records_images(tmp_path) -> None:
    model = SharedBlock()
    with pytest.warns(UserWarning):
        rank_layers(model, [torch.rand(2, 3, 8, 8)], n_steps=3, progress=False, checkpoint=tmp_path / "c.json")
    state = json.loads((tmp_path / "c.json").read_text())
    assert state["samples"] == 2 and state["complete"] and state["config"]["layers"] == ["head", "tail"]
