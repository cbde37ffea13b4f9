"""Tokenizer ids equal transformers'; older vocab-only folders load; sentence-transformers pooling."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import zoohub
from zoohub.tasks.tokenizer import Tokenizer

from .conftest import FAMILIES, PAIRS, TEXTS, torch, transformers


@pytest.mark.parametrize("model_type", FAMILIES)
def test_token_ids_equal_transformers(encoder_checkpoints, model_type):
    folder, _, tokenizer = encoder_checkpoints[(model_type, "backbone")]
    model = zoohub.Backbone.from_preset(folder)
    ours = model.preprocess(TEXTS, PAIRS)
    ref = tokenizer(TEXTS, PAIRS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], ref["attention_mask"])
    if "token_type_ids" in ours:
        np.testing.assert_array_equal(ours["token_type_ids"], ref["token_type_ids"])


def test_vocab_txt_only_folder_loads(encoder_checkpoints, tmp_path):
    folder, _, tokenizer = encoder_checkpoints[("bert", "backbone")]
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, tmp_path / name)
    shutil.copy(folder / "vocab.txt", tmp_path / "vocab.txt")  # the recipe's WordPiece vocabulary
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    model = zoohub.Backbone.from_preset(tmp_path)
    # do_lower_case=True: upper-case input maps to the lower-case vocabulary
    ref = tokenizer(["the great film"], return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(model.preprocess(["The GREAT Film"])["input_ids"], ref)
    # saving writes a tokenizer.json that transformers reads back to the same ids
    out = model.save_to_preset(tmp_path / "saved")
    assert (out / "tokenizer.json").is_file()
    again = transformers.AutoTokenizer.from_pretrained(out)
    np.testing.assert_array_equal(again(["The GREAT Film"], return_tensors="np")["input_ids"], ref)
    np.testing.assert_array_equal(zoohub.Backbone.from_preset(out).preprocess(["The GREAT Film"])["input_ids"], ref)


def test_vocab_json_merges_folder_loads(encoder_checkpoints, tmp_path):
    folder, _, tokenizer = encoder_checkpoints[("roberta", "backbone")]
    for name in ("vocab.json", "merges.txt"):  # the recipe's byte-level BPE, in the older two-file form
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>"}))
    tok = Tokenizer.from_folder(tmp_path)
    ids, _ = tok.encode_batch(TEXTS, max_length=None)
    assert ids == tokenizer(TEXTS)["input_ids"]


def _sentence_transformers_folder(src, dst, pooling):
    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 48, "pooling_mode_cls_token": pooling == "cls",
         "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False}))
    (dst / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": False}))
    return dst


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_text_embedder_matches_sentence_transformers_math(encoder_checkpoints, tmp_path, pooling):
    folder, ref_model, tokenizer = encoder_checkpoints[("bert", "backbone")]
    st = _sentence_transformers_folder(folder, tmp_path / "st", pooling)
    emb = zoohub.TextEmbedder.from_preset(st)
    assert emb.pooling == pooling and emb.normalize and emb.sequence_length == 16
    ours = emb.predict(TEXTS)
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    ref = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, rtol=1e-5)
    # The sentence-transformers files travel with a saved preset.
    out = emb.save_to_preset(tmp_path / "saved")
    assert (out / "1_Pooling" / "config.json").is_file() and (out / "modules.json").is_file()
    np.testing.assert_allclose(zoohub.TextEmbedder.from_preset(out).predict(TEXTS), ours, atol=1e-6)
