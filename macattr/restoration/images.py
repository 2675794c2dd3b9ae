"""Image files in and out, crops, and photographs that need no download.

- [`sample_images()`][macattr.restoration.images.sample_images]: four photographs bundled with macattr (192 × 192 RGB).
- [`photographs()`][macattr.restoration.images.photographs]: thirteen of scikit-image's bundled photographs, split
  into training and held-out test images (needs scikit-image, the
  ``[examples]`` extra).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from macattr.files import PathLike

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
                "immunohistochemistry", "brick", "grass", "gravel")  # fmt: skip
TEST_PHOTOS = ("coffee", "camera", "coins", "moon")


def read_image(path: PathLike, channels: int = 3) -> Tensor:
    """An image file as a float32 tensor (channels, H, W) in [0, 1], at the file's own bit depth.

    8-bit files are divided by 255, 16-bit ones (grey PNG and TIFF) by 65535; float files (TIFF) are taken as
    they are and must lie in [0, 1]. ``channels=3`` gives RGB (a grey file repeated in each channel),
    ``channels=1`` grey (a colour file through ITU-R 601-2 luma, as Pillow converts it). A file that is
    missing, truncated, too large for Pillow's decompression-bomb limit, not an image, or out of range is a
    ``ValueError`` that names it.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
        >>> save_image(path, torch.full((3, 4, 6), 0.5))
        >>> read_image(path).shape, read_image(path, channels=1).shape
        (torch.Size([3, 4, 6]), torch.Size([1, 4, 6]))
    """
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    try:
        with Image.open(path) as image:
            array = _unit_range(image, channels, path)
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"image file {path} is a folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    tensor = torch.from_numpy(array)
    return tensor[None].contiguous() if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def _unit_range(image: Image.Image, channels: int, path: PathLike) -> np.ndarray:
    """The pixels of ``image`` as float32 (H, W) for one channel or (H, W, 3), scaled from the file's depth."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # one channel of more than 8 bits
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            low, high = float(values.min()), float(values.max())
            if low < 0 or high > 1 or not np.isfinite(values).all():
                raise ValueError(f"image {path} holds floats in [{low:.4g}, {high:.4g}]; float images are read as "
                                 "they are and must lie in [0, 1]")  # fmt: skip
        elif values.min() < 0 or values.max() > 65535:
            raise ValueError(f"image {path} holds 32-bit integers beyond 16 bits ([{values.min():.0f}, "
                             f"{values.max():.0f}]); save it as 8 or 16 bits, or as floats in [0, 1]")  # fmt: skip
        else:
            values = values / 65535.0
        grey = values.astype(np.float32)
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0


def save_image(path: PathLike, image: Tensor) -> None:
    """Write (3, H, W) or (1, H, W) in [0, 1] as PNG (or any format Pillow infers from the suffix).

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "black.png")
        >>> save_image(path, torch.zeros(3, 8, 8))
        >>> float(read_image(path).max())
        0.0
    """
    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


def image_files(folder: PathLike) -> List[Path]:
    """The image files in ``folder`` (PNG, JPEG, BMP, TIFF), sorted by name; an error if there are none.

    Examples:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> for name in ("b.png", "a.png"):
        ...     save_image(os.path.join(folder, name), torch.zeros(3, 2, 2))
        >>> [p.name for p in image_files(folder)]
        ['a.png', 'b.png']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central ``size × size`` crop of (C, H, W); an error if the image is smaller.

    Examples:
        >>> center_crop(torch.zeros(3, 10, 12), 4).shape
        torch.Size([3, 4, 4])
    """
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"image of size {height}×{width} is smaller than the crop size {size}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def random_crop(image: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A random ``size × size`` crop of (C, H, W).

    Examples:
        >>> random_crop(torch.rand(3, 40, 30), 16, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 16, 16])
    """
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"image of size {height}×{width} is smaller than the crop size {size}")
    top = int(torch.randint(0, height - size + 1, (), generator=generator))
    left = int(torch.randint(0, width - size + 1, (), generator=generator))
    return image[..., top : top + size, left : left + size]


def sample_images(size: Optional[int] = None) -> List[Tensor]:
    """The four bundled photographs (astronaut, camera, chelsea, coffee), (3, 192, 192) each.

    size: centre-crop each to ``size × size`` (default: whole).

    Examples:
        >>> [tuple(image.shape) for image in sample_images(64)]
        [(3, 64, 64), (3, 64, 64), (3, 64, 64), (3, 64, 64)]
    """
    folder = resources.files("macattr.restoration") / "photos"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    images = []
    for name in names:
        with resources.as_file(folder / name) as path:
            images.append(read_image(path))
    return [center_crop(im, size) for im in images] if size else images


def photographs(split: str) -> List[Tensor]:
    """scikit-image's bundled photographs as RGB float tensors (3, H, W) in [0, 1].

    ``split``: "train" (nine photographs) or "test" (four others, held out).

    Examples:
        >>> len(photographs("train")), len(photographs("test"))
        (9, 4)
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return [image.clone() for image in _decoded_photographs(split)]


@functools.lru_cache(maxsize=2)
def _decoded_photographs(split: str) -> Tuple[Tensor, ...]:
    """The photographs of ``split``, decoded once per process (the pipeline asks for them at every stage)."""
    try:
        import skimage.data
    except ImportError:
        raise ImportError("photographs() needs scikit-image: pip install 'macattr[examples]'") from None
    out = []
    for name in TRAIN_PHOTOS if split == "train" else TEST_PHOTOS:
        array = getattr(skimage.data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle → left view
        array = np.stack([array] * 3, axis=-1) if array.ndim == 2 else array[..., :3]
        out.append(torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous())
    return tuple(out)


__all__ = [
    "IMAGE_SUFFIXES",
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "center_crop",
    "image_files",
    "photographs",
    "random_crop",
    "read_image",
    "sample_images",
    "save_image",
]
