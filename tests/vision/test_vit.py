"""ViT and ImageClassifier: parity with transformers on both backends, preprocessing, fine-tuning."""
from __future__ import annotations

import json

import numpy as np
import pytest

import zoohub
from zoohub.backend import using
from zoohub.errors import InputError
from zoohub.tasks.image_preprocessor import ImagePreprocessor

from tests.tiny import families_with, model_class

from .conftest import color_images

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")


def reference(folder, images, model_type="vit"):
    processor = transformers.ViTImageProcessorPil.from_pretrained(folder)
    pixels = processor(images=images, return_tensors="np")["pixel_values"]
    model = model_class(model_type, "image_classifier").from_pretrained(folder).eval()
    with torch.no_grad():
        return pixels, model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


@pytest.mark.parametrize("backend", ["jax", "numpy"])
@pytest.mark.parametrize("model_type", families_with("image_classifier"))  # every image family in the table
def test_parity_with_transformers(tiny, model_type, backend):
    folder = tiny.folder(model_type, "image_classifier")
    images, _ = color_images(5, seed=1)
    pixels, logits = reference(folder, images, model_type)
    with using(backend):
        clf = zoohub.ImageClassifier.from_preset(folder)
    assert clf.backend == backend and clf.labels == ["red", "green", "blue"]
    np.testing.assert_array_equal(clf.preprocess(images)["pixel_values"], pixels)
    np.testing.assert_allclose(clf.logits(images), logits, atol=1e-4)
    top = clf.top_k(images[:1], k=2)[0]
    assert [name for name, _ in top] == [clf.labels[i] for i in np.argsort(-logits[0])[:2]]


def test_preprocessor_matches_transformers_on_paths_sizes_and_modes(vit_dir, tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(16, 16, 3), (7, 31, 3), (64, 40, 3)]]
    gray = rng.integers(0, 256, size=(19, 21), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(12, 14, 4), dtype=np.uint8)
    paths = []
    for i, arr in enumerate(arrays):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(arr).save(paths[-1])
    config = json.loads((vit_dir / "preprocessor_config.json").read_text())
    ours = ImagePreprocessor(config)
    processor = transformers.ViTImageProcessorPil.from_pretrained(vit_dir)
    expected = processor(images=arrays, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours(arrays), expected)
    np.testing.assert_array_equal(ours([str(p) for p in paths]), expected)
    np.testing.assert_array_equal(ours(np.stack([arrays[0]] * 2)), expected[[0, 0]])
    pil_gray = processor(images=[Image.fromarray(gray).convert("RGB")], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours([gray]), pil_gray)
    pil_rgba = processor(images=[Image.fromarray(rgba).convert("RGB")], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours([rgba]), pil_rgba)
    # Floats in [0, 1] are taken as already rescaled (not divided by 255 twice).
    np.testing.assert_allclose(ours([arrays[0] / 255.0]), expected[:1], atol=1e-6)
    with pytest.raises(InputError, match="does not exist"):
        ours([tmp_path / "missing.png"])
    with pytest.raises(InputError, match="channels-last"):
        ours([np.zeros((3, 16, 16, 2), np.uint8)])


def test_fine_tune_new_head_and_round_trip(vit_dir, tmp_path):
    clf = zoohub.ImageClassifier.from_preset(vit_dir, num_classes=3, labels=["r", "g", "b"], seed=1)
    images, labels = color_images(96, seed=3)
    val_images, val_labels = color_images(30, seed=4)
    history = clf.fit(images, labels, validation_data=(val_images, val_labels), epochs=4, batch_size=16,
                      learning_rate=3e-3)
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.9
    assert clf.classify(val_images[:1]) == [["r", "g", "b"][val_labels[0]]]

    clf.save_to_preset(tmp_path / "tuned")
    pixels, logits = reference(tmp_path / "tuned", val_images[:4])
    np.testing.assert_allclose(clf.logits(val_images[:4]), logits, atol=1e-4)
    config = transformers.AutoConfig.from_pretrained(tmp_path / "tuned")
    assert config.id2label == {0: "r", 1: "g", 2: "b"}


def test_lora_on_vit_only_trains_adapters(vit_dir):
    clf = zoohub.ImageClassifier.from_preset(vit_dir)
    adapted = clf.enable_lora(rank=2)
    assert [a.rsplit(".", 1)[-1] for a in adapted] == ["query", "value"] * 2
    before = np.asarray(clf.params["vit"]["encoder"]["layer"]["0"]["attention"]["attention"]["query"]["weight"]).copy()
    images, labels = color_images(16, seed=5)
    clf.fit(images, labels, epochs=1, batch_size=8)
    after = clf.params["vit"]["encoder"]["layer"]["0"]["attention"]["attention"]["query"]
    np.testing.assert_array_equal(np.asarray(after["weight"]), before)
    assert np.abs(np.asarray(after["lora_B"]["weight"])).max() > 0


def test_bad_images_fail_before_training(vit_dir, tmp_path):
    clf = zoohub.ImageClassifier.from_preset(vit_dir)
    images, _ = color_images(2, seed=6)
    with pytest.raises(InputError, match="same length"):
        clf.fit(images, [0])
    with pytest.raises(InputError, match="out of range"):
        clf.fit(images, [0, 3])
    with pytest.raises(InputError, match="does not exist"):
        clf.fit([tmp_path / "nope.png", images[0]], [0, 1])
    with pytest.raises(InputError, match="empty"):
        clf.fit([], [])


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_backbone_on_images_matches_vit_model(vit_dir, backend, tmp_path):
    images, _ = color_images(3, seed=4)
    processor = transformers.ViTImageProcessorPil.from_pretrained(vit_dir)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = transformers.ViTForImageClassification.from_pretrained(vit_dir).eval().vit(pixel_values=pixels)
    with using(backend):
        backbone = zoohub.Backbone.from_preset(vit_dir)
    np.testing.assert_allclose(backbone.predict(images), ref.last_hidden_state.numpy(), atol=1e-4)
    out = backbone.save_to_preset(tmp_path / "vit_backbone")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTModel"]
    assert (out / "preprocessor_config.json").is_file()
