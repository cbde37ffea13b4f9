"""A tiny random ViTForImageClassification (16x16 images, patch 4) with a non-default image processor."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    # Non-default epsilon, a large init range and a seed of its own, so wrong details cannot hide.
    config = transformers.ViTConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80, image_size=16,
        patch_size=4, num_channels=3, layer_norm_eps=1e-6, initializer_range=0.3, num_labels=3,
        id2label={0: "red", 1: "green", 2: "blue"}, label2id={"red": 0, "green": 1, "blue": 2})
    torch.manual_seed(44)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    transformers.ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.45, 0.5, 0.55],
                                      image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


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
