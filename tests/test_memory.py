"""The memory model of a pass: what the first pass measures, counted by hand on a small network, and how the
automatic grid points per pass follow from it."""

from __future__ import annotations

from typing import List, Tuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from macattr import LayerPathConductance, LayerPathInternalInfluence
from macattr.engine import automatic_steps_per_pass, planning_passes
from macattr.memory import PassMemory


def _reported(attribution_class: type, images: int, dtype: torch.dtype, **options) -> List[Tuple[PassMemory, int]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    heard: List[Tuple[PassMemory, int]] = []
    with planning_passes(report=lambda memory, steps: heard.append((memory, steps))):
        attribution_class(model, [model[0], model[2]]).attribute(torch.rand(images, 4, dtype=dtype), n_steps=6,
                                                                   **options)  # fmt: skip
    return heard


@settings(max_examples=10, deadline=None)
@given(images=st.integers(1, 5), dtype=st.sampled_from([torch.float32, torch.float64]),
       certify=st.booleans())  # fmt: skip
def test_a_pass_holds_what_a_count_by_hand_gives(images: int, dtype: torch.dtype, certify: bool) -> None:
    # per grid point: the input point (4 values), the first Linear's output (8), Tanh's output, which the second
    # Linear saves (8), the second Linear's output (1); the weights are leaves and not counted
    size = torch.empty((), dtype=dtype).element_size()
    [(memory, steps)] = _reported(LayerPathConductance, images, dtype, certify=certify)
    assert memory.images == images and steps == 8  # the CPU's cap of 8 grid points per pass
    assert memory.activations_per_point == images * (4 + 8 + 8 + 1) * size
    copies = 5 if certify else 3  # the sum, the last value and gradient, and the certificate's two spreads
    assert memory.sums == copies * images * (8 + 1) * size
    # adding the largest layer (8 values) to its sums: its gradient, the change, the rules' difference, the mean
    assert memory.step_per_point == 4 * images * 8 * size
    assert memory.peak(steps) == steps * (memory.activations_per_point + memory.step_per_point) + memory.sums


def test_internal_influence_keeps_one_sum_per_layer_and_half_precision_sums_in_float32() -> None:
    [(memory, _)] = _reported(LayerPathInternalInfluence, 3, torch.float64)
    assert memory.sums == 3 * (8 + 1) * 8 and memory.step_per_point == 2 * 3 * 8 * 8
    [(memory, _)] = _reported(LayerPathConductance, 3, torch.bfloat16)
    assert memory.sums == 3 * 3 * (8 + 1) * 4  # float32 sums of bf16 values
    assert memory.activations_per_point == 3 * (4 + 8 + 8 + 1) * 2


def test_given_rows_per_pass_are_kept_and_reported() -> None:
    [(memory, steps)] = _reported(LayerPathConductance, 2, torch.float32, internal_batch_size=6)
    assert steps == 3 and memory.images == 2


@pytest.mark.parametrize(("per_point", "expected"), [(2**20, 8), (48 * 2**20, 2), (200 * 2**20, 1)])
def test_the_cpu_takes_as_many_grid_points_as_fit_128_mib_up_to_8(per_point: int, expected: int) -> None:
    assert automatic_steps_per_pass(PassMemory(1, per_point, sums=2**30), torch.device("cpu")) == expected


def test_the_engine_chooses_from_the_measured_memory() -> None:
    chosen: List[Tuple[PassMemory, int]] = []
    with planning_passes(report=lambda memory, steps: chosen.append((memory, steps))):
        model = nn.Sequential(nn.Linear(2**16, 2**10), nn.Tanh())  # 64 Ki inputs: 256 KiB per image and point
        LayerPathConductance(model, [model[0]]).attribute(torch.rand(64, 2**16), n_steps=10, target=0)
    [(memory, steps)] = chosen
    per_point = memory.activations_per_point + memory.step_per_point
    assert steps == automatic_steps_per_pass(memory, torch.device("cpu")) == 128 * 2**20 // per_point


def test_planning_blocks_nest_and_keep_the_outer_report() -> None:
    heard, agreed = [], []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    with planning_passes(report=lambda memory, steps: heard.append(steps)):
        with planning_passes(agree=lambda steps: agreed.append(steps) or 2):
            LayerPathConductance(model, [model[0]]).attribute(torch.rand(2, 4), n_steps=6)
    assert agreed == [8]  # the CPU's cap: the network is tiny
    assert heard == [2]  # the agreed number is the one used and reported


def test_planning_refuses_what_is_not_a_function() -> None:
    with pytest.raises(TypeError, match="agree must be a function or None, got int"):
        with planning_passes(agree=8):
            pass
    with pytest.raises(TypeError, match="report must be a function or None, got str"):
        with planning_passes(report="print"):
            pass
