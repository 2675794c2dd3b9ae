"""Image files in and out, and the sample photographs bundled with macattr."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from macattr._io import PathLike

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: PathLike) -> Tensor:
    """An RGB image file as a float32 tensor (3, H, W) in [0, 1]."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def save_image(path: PathLike, image: Tensor) -> None:
    """Write (3, H, W) or (1, H, W) in [0, 1] as PNG (or any format Pillow infers from the suffix)."""
    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


def image_files(folder: PathLike) -> List[Path]:
    """The image files in ``folder`` (PNG, JPEG, BMP, TIFF), sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central ``size × size`` crop of (C, H, W); an error if the image is smaller."""
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"image of size {height}×{width} is smaller than the crop size {size}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def random_crop(image: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A random ``size × size`` crop of (C, H, W)."""
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"image of size {height}×{width} is smaller than the crop size {size}")
    top = int(torch.randint(0, height - size + 1, (), generator=generator))
    left = int(torch.randint(0, width - size + 1, (), generator=generator))
    return image[..., top : top + size, left : left + size]


def sample_images(size: Optional[int] = None) -> List[Tensor]:
    """The four bundled photographs (astronaut, camera, chelsea, coffee), (3, 192, 192) each.

    size: centre-crop each to ``size × size`` (default: whole).
    """
    folder = resources.files("macattr") / "data"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    images = []
    for name in names:
        with resources.as_file(folder / name) as path:
            images.append(read_image(path))
    return [center_crop(im, size) for im in images] if size else images
