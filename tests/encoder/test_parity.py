"""Encoder families and heads match transformers, on both backends, and round-trip through it."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import zoohub
from zoohub.backend import using

from .conftest import CASES, FAMILIES, PAIRS, TEXTS, reference_outputs, transformers

TASK_CLASSES = {"backbone": "Backbone", "text_classifier": "TextClassifier", "masked_lm": "MaskedLM",
                "token_classifier": "TokenClassifier", "question_answerer": "QuestionAnswerer"}


def _ours(task, folder, backend):
    with using(backend):
        return getattr(zoohub, TASK_CLASSES[task]).from_preset(folder)


def _outputs(model, task, texts, pairs=None):
    if task in ("text_classifier", "token_classifier"):
        return model.logits(texts, pairs)
    if task == "question_answerer":
        return np.stack(model.logits(texts, pairs), -1)
    return model.predict(texts, pairs)


def _compare(ours, ref, mask, task):
    if task != "text_classifier":  # padded positions are garbage in both; compare real tokens
        ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("model_type,task", CASES)
def test_matches_transformers(encoder_checkpoints, model_type, task, backend):
    folder, ref_model, tokenizer = encoder_checkpoints[(model_type, task)]
    model = _ours(task, folder, backend)
    ref, mask = reference_outputs(ref_model, tokenizer, TEXTS, task=task, model_type=model_type)
    _compare(_outputs(model, task, TEXTS), ref, mask, task)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_text_pairs_match_transformers(encoder_checkpoints, model_type):
    folder, ref_model, tokenizer = encoder_checkpoints[(model_type, "text_classifier")]
    model = _ours("text_classifier", folder, "numpy")
    ref, mask = reference_outputs(ref_model, tokenizer, TEXTS, PAIRS, task="text_classifier", model_type=model_type)
    _compare(model.logits(TEXTS, PAIRS), ref, mask, "text_classifier")


@pytest.mark.parametrize("model_type,task", CASES)
def test_saved_preset_loads_in_transformers(encoder_checkpoints, model_type, task, tmp_path):
    folder, ref_model, tokenizer = encoder_checkpoints[(model_type, task)]
    model = _ours(task, folder, "numpy")
    out = model.save_to_preset(tmp_path / "saved")
    reloaded = getattr(transformers, type(ref_model).__name__).from_pretrained(out).eval()
    ref, mask = reference_outputs(reloaded, tokenizer, TEXTS, task=task, model_type=model_type)
    _compare(_outputs(model, task, TEXTS), ref, mask, task)
    # and our own loader reads what we wrote, same numbers
    again = _ours(task, out, "numpy")
    np.testing.assert_array_equal(_outputs(again, task, TEXTS), _outputs(model, task, TEXTS))


def test_backends_agree(encoder_checkpoints):
    folder = encoder_checkpoints[("bert", "text_classifier")][0]
    a = _ours("text_classifier", folder, "numpy").logits(TEXTS)
    b = _ours("text_classifier", folder, "jax").logits(TEXTS)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())


def test_sharded_checkpoint_loads(encoder_checkpoints, tmp_path):
    folder, ref_model, tokenizer = encoder_checkpoints[("bert", "masked_lm")]
    ref_model.save_pretrained(tmp_path, max_shard_size="40KB")
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = _ours("masked_lm", tmp_path, "numpy")
    ref, mask = reference_outputs(ref_model, tokenizer, TEXTS, task="masked_lm")
    _compare(model.predict(TEXTS), ref, mask, "masked_lm")


def test_we_write_shards_that_transformers_reads(encoder_checkpoints, tmp_path):
    folder, ref_model, tokenizer = encoder_checkpoints[("distilbert", "text_classifier")]
    model = _ours("text_classifier", folder, "numpy")
    out = model.save_to_preset(tmp_path / "sharded", max_shard_bytes=20_000)
    assert (out / "model.safetensors.index.json").is_file()
    reloaded = transformers.DistilBertForSequenceClassification.from_pretrained(out).eval()
    ref, mask = reference_outputs(reloaded, tokenizer, TEXTS, task="text_classifier", model_type="distilbert")
    _compare(model.logits(TEXTS), ref, mask, "text_classifier")


def test_new_classifier_head_on_an_mlm_checkpoint(encoder_checkpoints, tmp_path):
    folder = encoder_checkpoints[("bert", "masked_lm")][0]
    clf = zoohub.TextClassifier.from_preset(folder, num_classes=4, labels=["a", "b", "c", "d"])
    probs = clf.predict(TEXTS)
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert "classifier.weight" in clf.load_report.new_tensors
    out = clf.save_to_preset(tmp_path / "clf")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}
    again = zoohub.TextClassifier.from_preset(out)
    assert again.labels == ["a", "b", "c", "d"]
    np.testing.assert_allclose(again.predict(TEXTS), probs, atol=1e-6)


def test_classifier_needs_num_classes_without_a_head(encoder_checkpoints):
    folder = encoder_checkpoints[("bert", "masked_lm")][0]
    with pytest.raises(zoohub.errors.UnsupportedConfigError, match="num_classes"):
        zoohub.TextClassifier.from_preset(folder)


def test_sequence_length_is_capped_at_the_position_table(encoder_checkpoints):
    folder, ref_model, tokenizer = encoder_checkpoints[("roberta", "backbone")]
    model = zoohub.Backbone.from_preset(folder, sequence_length=1000)
    long_text = " ".join(["the great film"] * 40)
    hidden = model.predict([long_text])
    assert hidden.shape[1] == 42 - 2  # RoBERTa positions start after pad_token_id
    assert np.isfinite(hidden).all()


def test_fill_mask_returns_top_k(encoder_checkpoints):
    folder = encoder_checkpoints[("bert", "masked_lm")][0]
    mlm = zoohub.MaskedLM.from_preset(folder)
    (masks,) = mlm.fill_mask("paris is the [MASK] of france", top_k=3)
    assert len(masks) == 1 and len(masks[0]) == 3
    probs = [p for _, p in masks[0]]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_classifier_without_id2label_gets_transformers_default(encoder_checkpoints, tmp_path):
    import json
    import shutil

    folder, ref_model, tokenizer = encoder_checkpoints[("bert", "masked_lm")]
    model = transformers.BertForSequenceClassification(ref_model.config.__class__(**{
        **ref_model.config.to_dict(), "num_labels": 2, "id2label": None, "label2id": None}))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("id2label", None), config.pop("label2id", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(folder / "tokenizer.json", tmp_path)
    clf = zoohub.TextClassifier.from_preset(tmp_path)
    assert clf.labels == ["LABEL_0", "LABEL_1"] and not clf.load_report.new_tensors


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_bfloat16_checkpoints_keep_their_dtype_and_round_trip(encoder_checkpoints, backend, tmp_path):
    import torch

    folder, ref_model, tokenizer = encoder_checkpoints[("bert", "text_classifier")]
    bf16_dir = tmp_path / "bf16"
    copy.deepcopy(ref_model).to(torch.bfloat16).save_pretrained(bf16_dir)  # the fixture's model stays float32
    tokenizer.save_pretrained(bf16_dir)
    with using(backend):
        model = zoohub.TextClassifier.from_preset(bf16_dir)
        as_f32 = zoohub.TextClassifier.from_preset(bf16_dir, dtype="float32")
    leaf = model.params["bert"]["embeddings"]["word_embeddings"]["weight"]
    assert str(leaf.dtype) == "bfloat16" and str(as_f32.params["classifier"]["weight"].dtype) == "float32"
    # the bf16 weights upcast exactly, so the float32 copy matches transformers' float32 run of them
    reloaded = transformers.BertForSequenceClassification.from_pretrained(bf16_dir, dtype=torch.float32).eval()
    ref, _ = reference_outputs(reloaded, tokenizer, TEXTS, task="text_classifier")
    np.testing.assert_allclose(as_f32.logits(TEXTS), ref, atol=1e-4)
    # bf16 compute (norms and softmax in float32) stays within bfloat16 precision of it
    np.testing.assert_allclose(model.logits(TEXTS).astype(np.float32), ref, atol=0.1 * max(1.0, np.abs(ref).max()))
    out = model.save_to_preset(tmp_path / "saved")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
