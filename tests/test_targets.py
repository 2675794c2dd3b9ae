"""Targets against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from macattr import targets


def _direct_gradient_magnitude(image: np.ndarray) -> float:
    channels, height, width = image.shape
    total = 0.0
    for c in range(channels):
        for h in range(height - 1):
            for w in range(width - 1):
                dh = image[c, h, w] - image[c, h + 1, w]
                dw = image[c, h, w] - image[c, h, w + 1]
                total += math.sqrt(dh * dh + dw * dw)
    return total


@given(st.integers(0, 10_000), st.integers(2, 7), st.integers(2, 7))
def test_gradient_magnitude_matches_a_direct_loop(seed: int, height: int, width: int) -> None:
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = targets.gradient_magnitude_of(images, eps=0.0)
    for i in range(2):
        assert got[i].item() == pytest.approx(_direct_gradient_magnitude(images[i].numpy()), rel=1e-12)


def test_gradient_magnitude_has_a_finite_gradient_on_a_flat_image() -> None:
    flat = torch.zeros(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    targets.gradient_magnitude_of(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_wrapped_targets_and_windows() -> None:
    model = nn.Identity()
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(targets.output_sum(model)(images), images.sum((1, 2, 3)))
    torch.testing.assert_close(targets.output_mean(model)(images), images.mean((1, 2, 3)))
    torch.testing.assert_close(targets.window(model, 2, 3, 4)(images), images[:, :, 2:6, 3:7].sum((1, 2, 3)))
    torch.testing.assert_close(
        targets.window(model, 1, 1, 5, of="mean")(images), images[:, :, 1:6, 1:6].mean((1, 2, 3))
    )
    torch.testing.assert_close(
        targets.window(model, 0, 0, 4, of="gradient_magnitude")(images),
        targets.gradient_magnitude_of(images[:, :, :4, :4]),
    )
    torch.testing.assert_close(targets.named(model, "mean")(images), images.mean((1, 2, 3)))
    torch.testing.assert_close(targets.NAMED_TARGETS["mean"](images), images.mean((1, 2, 3)))
    assert any(m is model for m in targets.output_sum(model).modules())


def test_select_target_follows_captum() -> None:
    scores = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(targets.select_target(scores, (1, 2)), scores[:, 1, 2])
    torch.testing.assert_close(
        targets.select_target(scores, [(0, 1), (2, 3)]), torch.stack([scores[0, 0, 1], scores[1, 2, 3]])
    )
    flat = scores.flatten(1)
    torch.testing.assert_close(targets.select_target(flat, 5), flat[:, 5])
    torch.testing.assert_close(targets.select_target(flat, torch.tensor([1, 7])), torch.stack([flat[0, 1], flat[1, 7]]))
    torch.testing.assert_close(targets.select_target(flat, [3, 4]), torch.stack([flat[0, 3], flat[1, 4]]))
    torch.testing.assert_close(targets.select_target(flat[:, :1], None), flat[:, 0])


def test_bad_target_arguments_are_refused() -> None:
    model = nn.Identity()
    images = torch.rand(1, 3, 6, 6)
    with pytest.raises(ValueError, match="does not fit"):
        targets.window(model, 4, 4, 3)(images)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        targets.window(model, 0, 0, 0)
    with pytest.raises(ValueError, match="top must be an integer >= 0"):
        targets.window(model, -1, 0, 2)
    with pytest.raises(ValueError, match="of must be one of"):
        targets.window(model, 0, 0, 2, of="max")
    with pytest.raises(TypeError, match="model must be callable"):
        targets.output_sum(3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with H, W >= 2"):
        targets.gradient_magnitude_of(torch.rand(2, 5))
    with pytest.raises(ValueError, match="one entry per sample"):
        targets.expand_target([0, 1, 2], 2, 3)
    with pytest.raises(TypeError, match="target must be"):
        targets.select_target(torch.rand(2, 3), "cat")
    with pytest.raises(TypeError, match="the model returns list, not a tensor; pass output="):
        targets.output_sum(lambda x: x.tolist())(images)
    with pytest.raises(TypeError, match="must return a tensor"):
        targets.select_target([1.0], None)
