"""A tiny random ViTForImageClassification (16x16 images, patch 4) with a non-default image processor."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def vit_dir(tiny):
    """The ViT family's tiny ViTForImageClassification (16x16 images, patch 4, labels red/green/blue)
    with a non-default image processor."""
    return tiny.folder("vit", "image_classifier")


def color_images(n: int, seed: int, size=(20, 23)) -> tuple[list[np.ndarray], list[int]]:
    """uint8 HWC images whose dominant channel is the label, with noise: learnable from pixels only."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        label = int(rng.integers(3))
        img = rng.integers(0, 150, size=(*size, 3))
        img[..., label] += 100
        images.append(img.clip(0, 255).astype(np.uint8))
        labels.append(label)
    return images, labels
