"""Checkpoints and exact resume; LoRA trains only adapters and round-trips through peft."""
from __future__ import annotations

import json

import numpy as np
import pytest

import zoohub
from zoohub.errors import InputError
from zoohub.presets.weights import flatten

from .conftest import sentiment_data

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_resume_equals_uninterrupted(bert_classifier_dir, tmp_path):
    texts, labels = sentiment_data(48, seed=11)
    args = dict(epochs=3, batch_size=16, learning_rate=1e-3, seed=4)  # dropout on: keys must replay too

    whole = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    expected = whole.fit(texts, labels, checkpoint_dir=tmp_path / "a", **args)

    first = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    first.fit(texts, labels, checkpoint_dir=tmp_path / "b", **{**args, "epochs": 1})
    assert json.loads((tmp_path / "b" / "latest.json").read_text())["epoch"] == 1
    resumed = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    history = resumed.fit(texts, labels, checkpoint_dir=tmp_path / "b", resume=True, **args)

    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(history["step_loss"], expected["step_loss"])
    for k, v in flatten(whole.params).items():
        np.testing.assert_array_equal(np.asarray(flatten(resumed.params)[k]), np.asarray(v), err_msg=k)
    # Every epoch's checkpoint is a loadable preset.
    again = zoohub.TextClassifier.from_preset(tmp_path / "a" / "epoch-0003")
    np.testing.assert_allclose(again.logits(texts[:4]), whole.logits(texts[:4]), atol=1e-6)


def test_resume_refuses_a_different_setup(bert_classifier_dir, tmp_path):
    texts, labels = sentiment_data(16, seed=12)
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    clf.fit(texts, labels, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    other = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    other.enable_lora(rank=2)
    with pytest.raises(InputError, match="different parameters"):
        other.fit(texts, labels, epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=True)


@pytest.fixture(scope="module")
def lora_tuned(bert_classifier_dir):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    base = {k: np.array(v) for k, v in flatten(clf.params).items()}
    adapted = clf.enable_lora(rank=4, alpha=8)
    texts, labels = sentiment_data(128, seed=13)
    history = clf.fit(texts, labels, epochs=4, batch_size=16, learning_rate=1e-2)
    return clf, base, adapted, history


def test_lora_trains_only_adapters_and_head(lora_tuned):
    clf, base, adapted, history = lora_tuned
    assert adapted == [f"bert.encoder.layer.{i}.attention.self.{n}" for i in (0, 1) for n in ("query", "value")]
    flat = flatten(clf.params)
    for k, v in base.items():
        if not k.startswith("classifier."):  # the head trains, as PEFT's modules_to_save
            np.testing.assert_array_equal(np.asarray(flat[k]), v, err_msg=f"base weight {k} changed")
    assert not np.array_equal(np.asarray(flat["classifier.weight"]), base["classifier.weight"])
    assert np.abs(np.asarray(flat["bert.encoder.layer.1.attention.self.value.lora_B.weight"])).max() > 0
    assert float(flat["bert.encoder.layer.0.attention.self.query.lora_scaling"]) == 2.0
    assert history["loss"][-1] < history["loss"][0]


def test_peft_loads_the_adapter_with_the_same_outputs(lora_tuned, bert_classifier_dir, tmp_path):
    from peft import PeftModel

    clf = lora_tuned[0]
    texts = sentiment_data(6, seed=14)[0]
    clf.save_lora(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    assert config["target_modules"] == ["query", "value"]
    base = transformers.AutoModelForSequenceClassification.from_pretrained(bert_classifier_dir).eval()
    model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert_classifier_dir)
    with torch.no_grad():
        ref = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    ours = clf.logits(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-4)

    # load_lora reads it back onto a fresh model; merge_lora and save_to_preset fold it in.
    fresh = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    assert len(fresh.load_lora(tmp_path / "adapter")) == 4
    np.testing.assert_allclose(fresh.logits(texts), ours, atol=1e-6)
    clf.save_to_preset(tmp_path / "merged")
    merged = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        ref = merged(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    fresh.merge_lora()
    assert not any(".lora_" in k for k in flatten(fresh.params))
    np.testing.assert_allclose(fresh.logits(texts), ours, atol=1e-5)

    # an adapter's files are confined to its folder like a preset's
    outside = tmp_path / "elsewhere.safetensors"
    (tmp_path / "adapter" / "adapter_model.safetensors").rename(outside)
    (tmp_path / "adapter" / "adapter_model.safetensors").symlink_to(outside)
    with pytest.raises(zoohub.errors.UnsafePathError, match="adapter_model.safetensors"):
        zoohub.TextClassifier.from_preset(bert_classifier_dir).load_lora(tmp_path / "adapter")


def test_default_targets_and_errors(distilbert_dir):
    model = zoohub.TextClassifier.from_preset(distilbert_dir, num_classes=3)
    adapted = model.enable_lora()
    assert [a.rsplit(".", 1)[-1] for a in adapted] == ["q_lin", "v_lin"] * 2
    with pytest.raises(InputError, match="already enabled"):
        model.enable_lora()
    other = zoohub.TextClassifier.from_preset(distilbert_dir, num_classes=3)
    with pytest.raises(InputError, match="match no linear"):
        other.enable_lora(targets=["nonexistent"])
