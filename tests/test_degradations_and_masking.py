"""Degradations' statistics, pixel masks and the masked L1 loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from macattr.restoration.degradations import (
    degrade,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
    jpeg,
    parse_task,
    random_level,
)
from macattr.restoration.images import photographs, sample_images
from macattr.restoration.masking import masked_l1, random_pixel_mask


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_noise_sigma_measured_on_a_flat_image(sigma: float) -> None:
    flat = torch.full((4, 3, 64, 64), 0.5, dtype=torch.float64)
    noisy = gaussian_noise(flat, sigma, torch.Generator().manual_seed(0))
    measured = (noisy - flat).std().item() * 255
    assert measured == pytest.approx(sigma, rel=0.03)  # clipping at 0 and 1 is 2σ away even for σ = 50
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_noise_is_clipped_to_the_unit_range() -> None:
    dark = torch.zeros(1, 3, 32, 32)
    noisy = gaussian_noise(dark, 50.0, torch.Generator().manual_seed(0))
    assert noisy.min() == 0 and (noisy > 0).float().mean() == pytest.approx(0.5, abs=0.05)


@given(st.floats(0.1, 3.1))
def test_blur_kernel_sums_to_one_and_keeps_a_flat_image(sigma: float) -> None:
    kernel = gaussian_kernel(sigma)
    assert kernel.shape == (15, 15)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(kernel, kernel.T)
    flat = torch.full((1, 3, 20, 20), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(flat, sigma), flat)


def test_blur_reduces_detail_more_with_larger_sigma() -> None:
    image = torch.stack(sample_images(64))
    detail = [(gaussian_blur(image, s) - image).abs().mean().item() for s in (0.5, 1.5, 3.0)]
    assert detail[0] < detail[1] < detail[2]


def test_jpeg_quality_changes_the_image() -> None:
    image = torch.stack(sample_images(64))
    errors = [(jpeg(image, q) - image).abs().mean().item() for q in (20, 50, 90)]
    assert errors[0] > errors[1] > errors[2] > 0
    assert torch.equal(jpeg(image, 50), jpeg(image, 50))


def test_training_levels_lie_in_the_appendix_ranges() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        assert 0 < random_level("noise", generator) <= 50
        assert 0.1 <= random_level("blur", generator) <= 3.1
        quality = random_level("jpeg", generator)
        assert 20 <= quality <= 90 and quality == int(quality)
    assert parse_task("noise25") == ("noise", 25.0) and parse_task("blur2") == ("blur", 2.0)
    assert parse_task("noise30") == ("noise", 30.0) and parse_task("jpeg75") == ("jpeg", 75.0)


def test_bad_degradation_arguments_are_refused() -> None:
    image = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(image, -1)
    with pytest.raises(ValueError, match="size must be odd"):
        gaussian_kernel(1.0, 4)
    with pytest.raises(ValueError, match="quality"):
        jpeg(image, 0)
    with pytest.raises(ValueError, match="quality"):
        jpeg(image, 100)
    with pytest.raises(ValueError, match="kind must be"):
        degrade(image, "fog", 1)
    with pytest.raises(TypeError, match="images must be"):
        gaussian_blur(torch.rand(3, 20, 20), 1.0)
    with pytest.raises(ValueError, match="too small"):
        gaussian_blur(torch.rand(1, 3, 5, 5), 1.0)
    for bad in ("fog3", "noise", "noise2x"):
        with pytest.raises(ValueError, match="a task must look like"):
            parse_task(bad)
    with pytest.raises(TypeError, match="a task must be a name"):
        parse_task(25)


@given(st.integers(0, 1000), st.sampled_from([1, 2, 4]), st.sampled_from([0.25, 0.5, 0.75]))
def test_pixel_masks_mask_the_ratio_of_patches(seed: int, patch: int, ratio: float) -> None:
    mask = random_pixel_mask(3, 16, 16, ratio, patch, torch.Generator().manual_seed(seed))
    assert mask.shape == (3, 1, 16, 16)
    assert mask.flatten(1).mean(1).tolist() == [ratio] * 3
    blocks = mask.reshape(3, 1, 16 // patch, patch, 16 // patch, patch)
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()


def test_masked_l1_ignores_unmasked_pixels() -> None:
    target = torch.rand(2, 3, 8, 8)
    mask = random_pixel_mask(2, 8, 8, 0.5, generator=torch.Generator().manual_seed(0))
    output = target + 0.2 * mask  # error 0.2 on masked pixels
    garbage = output + 5.0 * (1 - mask)  # anything on unmasked pixels
    assert masked_l1(output, target, mask).item() == pytest.approx(0.2)
    assert masked_l1(garbage, target, mask).item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="masks no pixel"):
        masked_l1(output, target, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="same shape"):
        masked_l1(output[:1], target, mask)


def test_bad_mask_and_image_arguments_are_refused(tmp_path) -> None:
    from macattr.restoration.images import center_crop, image_files, random_crop

    with pytest.raises(ValueError, match="ratio"):
        random_pixel_mask(1, 4, 4, ratio=1.5)
    with pytest.raises(ValueError, match="patch_size must divide"):
        random_pixel_mask(1, 6, 6, patch_size=4)
    with pytest.raises(ValueError, match="n must be"):
        random_pixel_mask(0, 4, 4)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        sample_images(400)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        center_crop(torch.rand(3, 8, 8), 9)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        random_crop(torch.rand(3, 8, 8), 9, torch.Generator())
    with pytest.raises(ValueError, match="does not exist"):
        image_files(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no images"):
        image_files(tmp_path)


def test_photographs_are_decoded_once_but_every_caller_gets_its_own_copy() -> None:
    first = photographs("test")
    first[0].zero_()
    again = photographs("test")
    assert again[0].abs().sum() > 0 and all(a.data_ptr() != b.data_ptr() for a, b in zip(first, again))
    assert [tuple(image.shape) for image in again] == [tuple(image.shape) for image in photographs("test")]
