"""Edge cases: layers that are not batch-first, attributing to the input itself, plain forward functions, the
train-mode switch through rank_layers, k rows per sample, empty batches, checkpoint names and settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import residual_net
from macattr import (
    LayerMAC,
    LayerPathConductance,
    LayerScores,
    MaskAttributionPath,
    plot_comparison,
    plot_layer_importance,
    rank_layers,
    targets,
)
from macattr.engine import SweepPlan
from macattr.ranking.checkpoint import Checkpoint
from macattr.ranking.distributed import init_from_environment


class SequenceFirst(nn.Module):
    """A layer whose output is (T, N, D): the batch is not first."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).transpose(0, 1)  # (N, T, D) → (T, N, D)


def test_a_layer_whose_output_is_not_batch_first_is_refused_by_name() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = SequenceFirst()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).sum(dim=(0, 2))

    model = Model().double()
    x = torch.rand(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="layer 'inner' has a tensor of shape .* first dimension is not the batch"):
        LayerPathConductance(model, model.inner).attribute(x, n_steps=5, internal_batch_size=4)


def test_attributing_to_the_input_of_the_first_layer() -> None:
    model = residual_net(0)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    forward = targets.output_sum(model)
    attributions = LayerPathConductance(forward, model.head).attribute(x, n_steps=16, attribute_to_layer_input=True)
    assert attributions.shape == x.shape
    # the input of the first layer is the input: conductance there is integrated gradients, which is complete
    torch.testing.assert_close(attributions.flatten(1).sum(1), forward(x) - forward(torch.zeros_like(x)), rtol=2e-2,
                               atol=1e-3)  # fmt: skip


def test_a_plain_function_forward_warns_and_still_resets_the_layers_it_knows() -> None:
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Dropout(0.5)), nn.Conv2d(4, 3, 1)).train()
    x = torch.rand(2, 3, 6, 6)
    with pytest.warns(UserWarning, match="the model behind forward_func is unknown"):
        mac = LayerMAC(lambda images: model(images).flatten(1).sum(1), model[0])
    first, second = (mac.attribute(x, n_steps=4, seed=0) for _ in range(2))
    torch.testing.assert_close(first, second)  # the dropout inside the layer ran in eval mode
    assert model.training and model[0][1].training


def test_the_train_mode_setting_reaches_the_attribution_passes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Conv2d(4, 3, 1))
    x = torch.rand(3, 3, 6, 6)
    model[1].running_mean.fill_(5.0)  # running statistics far from the batch's
    in_eval = rank_layers(model, [x], n_steps=4, progress=False)
    in_train = rank_layers(model, [x], n_steps=4, progress=False, train_mode=True)
    assert in_eval["0"] != pytest.approx(in_train["0"], rel=1e-3)
    assert float(model[1].running_mean[0]) == 5.0


def test_the_delta_of_a_layer_with_several_rows_per_sample() -> None:
    class Windows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 4, 1)
            self.mix = nn.Linear(4, 4)
            self.head = nn.Conv2d(4, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, h, w = x.shape
            tokens = self.embed(x).permute(0, 2, 3, 1).reshape(n * 4, h * w // 4, 4)  # 4 windows per image
            mixed = torch.tanh(self.mix(tokens)).reshape(n, h, w, 4).permute(0, 3, 1, 2)
            return self.head(mixed)

    model = Windows().double()
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    attributions, delta = LayerMAC(targets.output_sum(model), model.mix).attribute(
        x, n_steps=6, seed=0, return_convergence_delta=True
    )
    assert attributions.shape == (8, 4, 4) and delta.shape == (2,)


def test_bad_sweep_and_input_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="steps_per_pass must be an integer >= 1"):
        SweepPlan(n_steps=4, steps_per_pass=0)
    with pytest.raises(ValueError, match="rule must be one of"):
        SweepPlan(n_steps=4, rule="other")
    model = residual_net(0)
    with pytest.raises(ValueError, match="at least one sample"):
        LayerMAC(targets.output_sum(model), model.tail).attribute(torch.rand(0, 3, 4, 4).double())
    with pytest.raises(TypeError, match="return_convergence_delta must be True or False"):
        LayerMAC(targets.output_sum(model), model.tail).attribute(torch.rand(1, 3, 4, 4).double(),
                                                                  return_convergence_delta="yes")  # fmt: skip
    with pytest.raises(ValueError, match="backend 'nccl' needs CUDA devices"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORLD_SIZE", "2")
            init_from_environment("nccl", "cpu")


def test_the_hard_mask_path_starts_with_exactly_the_mask_ratio_masked() -> None:
    x = torch.ones(1, 1, 2, 5, dtype=torch.float64)
    path = MaskAttributionPath(mask_ratio=0.9, sharpness=math.inf, seed=0)
    start = path.bind((x,), (torch.zeros(()),))(torch.tensor([path.interval()[0]], dtype=torch.float64))[0]
    assert int((start == 0).sum()) == 9  # 1 − 0.9 rounds below 1/10 without the tolerance


def test_checkpoints_without_a_suffix_and_tuple_patches_resume(tmp_path: Path) -> None:
    (tmp_path / "ck.rank0-of-2").write_text("{}")
    assert Checkpoint.for_process(tmp_path / "ck", "mac", {}, 1, 2).path.name == "ck.rank1-of-2"
    with pytest.raises(ValueError, match="written by 2 process"):
        Checkpoint.for_process(tmp_path / "ck", "mac", {}, 0, 3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1)).double()
    x = torch.rand(2, 3, 4, 6, dtype=torch.float64)
    kwargs = dict(n_steps=3, patch_size=(2, 3), progress=False, checkpoint=tmp_path / "run.json")
    first = rank_layers(model, [x], **kwargs)
    assert json.loads((tmp_path / "run.json").read_text())["config"]["path"]["patch_size"] == [2, 3]
    assert dict(rank_layers(model, [x], **kwargs)) == dict(first)  # resumed: complete, same settings


def test_dict_batches_with_a_target_that_is_not_a_tensor() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1)).double()
    batches = [{"input": torch.rand(2, 3, 4, 4, dtype=torch.float64), "target": ["a", "b"]}]
    assert rank_layers(model, batches, n_steps=2, progress=False).images == 2


def test_figures_of_all_zero_scores() -> None:
    zeros = LayerScores({"a.0.x": 0.0, "a.1.x": 0.0}, "mac")
    assert plot_comparison(zeros, zeros, top_k=1, allow_partial=True) is not None
    assert plot_layer_importance([zeros, zeros], kind="profile") is not None
