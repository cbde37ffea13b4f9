"""Image preprocessing from `preprocessor_config.json`, as transformers' ViT image processor does it.

Resize goes through Pillow with the config's `resample` (BILINEAR = 2 for ViT), exactly like
transformers' PIL backend: uint8 image -> PIL -> resize -> uint8 array; then rescale (x * 1/255, in
float64, cast to float32) and normalize ((x - mean) / std, float32). Output is channels-first
`pixel_values` [B, C, H, W], the layout transformers models take.

    >>> import numpy as np
    >>> pre = ImagePreprocessor({"size": {"height": 16, "width": 16}})
    >>> pre([np.zeros((20, 30, 3), np.uint8)]).shape
    (1, 3, 16, 16)
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zoohub.errors import InputError, UnsupportedConfigError

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
# What a single image may be: an HWC (or HW) array, or a path Pillow can open.
ImageLike = np.ndarray | str | os.PathLike


def _size(config: Mapping, default: int) -> tuple[int, int]:
    size = config.get("size", default)
    if isinstance(size, int):
        return size, size
    if isinstance(size, Mapping) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise UnsupportedConfigError(
        f"preprocessor_config.json size={size!r} is not supported; expected {{'height': H, 'width': W}} or an int "
        "(shortest_edge resizing with center crop is not implemented)")


class ImagePreprocessor:
    """Resize, rescale and normalize images into `pixel_values` [B, C, H, W] float32.

    Args:
        config: the `preprocessor_config.json` dict (transformers' ViTImageProcessor keys).
        image_size: target size when the config has no `size` (the model's `image_size`).

    Example:
        >>> import numpy as np
        >>> pre = ImagePreprocessor({"size": {"height": 8, "width": 8}, "image_mean": [0.5] * 3,
        ...                          "image_std": [0.5] * 3})
        >>> float(pre([np.full((4, 4, 3), 255, np.uint8)]).max())
        1.0
    """

    def __init__(self, config: Mapping | None = None, *, image_size: int = 224):
        config = dict(config or {})
        if config.get("do_center_crop"):
            raise UnsupportedConfigError("preprocessor_config.json asks for do_center_crop, which is not implemented")
        self.config = config
        self.height, self.width = _size(config, image_size)
        self.do_resize = bool(config.get("do_resize", True))
        self.resample = int(config.get("resample", 2))  # PIL.Image.BILINEAR
        self.do_rescale = bool(config.get("do_rescale", True))
        self.rescale_factor = float(config.get("rescale_factor", 1 / 255))
        self.do_normalize = bool(config.get("do_normalize", True))
        self.mean = np.asarray(config.get("image_mean", IMAGENET_STANDARD_MEAN), np.float32)
        self.std = np.asarray(config.get("image_std", IMAGENET_STANDARD_STD), np.float32)

    def to_config(self) -> dict:
        """The preprocessor_config.json to save (transformers loads it as a ViTImageProcessor)."""
        out = dict(self.config)
        out.setdefault("image_processor_type", "ViTImageProcessor")
        out.update({"size": {"height": self.height, "width": self.width}, "do_resize": self.do_resize,
                    "resample": self.resample, "do_rescale": self.do_rescale,
                    "rescale_factor": self.rescale_factor, "do_normalize": self.do_normalize,
                    "image_mean": self.mean.tolist(), "image_std": self.std.tolist()})
        return out

    @staticmethod
    def load(image: ImageLike, index: int = 0) -> np.ndarray:
        """An HWC array for an array or a file path (read with Pillow, converted to RGB)."""
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            path = Path(image)
            if not path.is_file():
                raise InputError(f"images[{index}]: file {path} does not exist")
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            return np.asarray(image.convert("RGB"))
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InputError(
                f"images[{index}] has shape {arr.shape}; expected channels-last [H, W, C] with C in 1, 3, 4 "
                "(or [H, W] grayscale), or a file path")
        if arr.dtype.kind not in "uif":
            raise InputError(f"images[{index}] has dtype {arr.dtype}; expected uint8 or float")
        return arr

    def _to_uint8(self, arr: np.ndarray, index: int) -> tuple[np.ndarray, bool]:
        """uint8 pixels for Pillow, and whether the input was already in [0, 1] (skip rescaling)."""
        if arr.dtype == np.uint8:
            return arr, False
        if np.allclose(arr, np.round(arr)) and arr.min() >= 0 and arr.max() <= 255:
            return arr.astype(np.uint8), False
        if arr.min() >= 0 and arr.max() <= 1:
            # transformers' to_pil_image truncates (x * 255) to uint8 the same way.
            return (arr * 255).astype(np.uint8), True
        raise InputError(f"images[{index}] has float values in [{arr.min()}, {arr.max()}]; expected [0, 1] or [0, 255]")

    def one(self, image: ImageLike, index: int = 0) -> np.ndarray:
        """One image -> [C, H, W] float32."""
        arr = self.load(image, index)
        if self.mean.size == 3 and arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)  # grayscale -> RGB, as PIL's convert("RGB") does
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]  # RGBA -> RGB drops alpha, as PIL's convert("RGB") does
        unit_range = False
        if self.do_resize and arr.shape[:2] != (self.height, self.width):
            from PIL import Image

            pixels, unit_range = self._to_uint8(arr, index)
            img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            arr = np.asarray(img.resize((self.width, self.height), resample=self.resample))
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            if unit_range:
                arr = (arr.astype(np.float64) / 255).astype(np.float32)
        elif arr.dtype != np.uint8 and arr.max() <= 1:
            unit_range = True  # float input already in [0, 1]: rescaling again would be a bug
        x = arr.astype(np.float64) * self.rescale_factor if self.do_rescale and not unit_range else arr
        x = np.asarray(x).astype(np.float32)
        if self.do_normalize:
            x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: Sequence[ImageLike] | np.ndarray) -> np.ndarray:
        """A batch: a list of images (arrays or paths) or an [N, H, W, C] array -> [N, C, H, W] float32."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]
        if len(images) == 0:
            raise InputError("images is empty; pass at least one image")
        return np.stack([self.one(img, i) for i, img in enumerate(images)])
