"""What the generated encoder suite does not reach for DeBERTa-v2/v3 and ModernBERT: the log buckets
against transformers' own, DeBERTa-v2's other shape (separate position projections, absolute positions,
segments, a narrower token table, c2p only, the original lm_predictions head), ModernBERT's first-hub
config keys and a sequence many windows long, and the configs refused by name.

The recipes themselves already put the test sentences past DeBERTa's exact bucket range and past
ModernBERT's local window, and pool ModernBERT's classifier by mean."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors import safe_open

import zoohub
from tests.tiny import build, recipe_of
from zoohub.backbones import get_family
from zoohub.backbones.deberta_v2 import relative_positions
from zoohub.errors import UnsupportedConfigError

from .conftest import TEXTS, reference_outputs, torch, transformers


def _variant(model_type: str, **changes):
    recipe = recipe_of(model_type)
    return dataclasses.replace(recipe, kwargs={**recipe.kwargs, **changes})


def _matches(model, ref_model, tokenizer, task, model_type, texts=TEXTS):
    ref, mask = reference_outputs(ref_model, tokenizer, texts, task=task, model_type=model_type)
    mask = mask.astype(bool)
    np.testing.assert_allclose(model.predict(texts)[mask], ref[mask], atol=1e-4, rtol=0)


@pytest.mark.parametrize("length,buckets,max_position", [(6, 4, 8), (40, 6, 64), (300, 256, 512), (130, 8, 33)])
def test_log_buckets_equal_transformers(length, buckets, max_position):
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    ids = torch.arange(length)
    ref = make_log_bucket_position(ids[:, None] - ids[None, :], buckets, max_position).long().numpy()
    np.testing.assert_array_equal(relative_positions(length, buckets, max_position), ref)


@pytest.mark.parametrize("changes,stored_name", [
    # the original lm_predictions head multiplies by the token table (transformers needs E = D for it)
    (dict(legacy=False), "lm_predictions.lm_head.bias"),
    # a narrower token table: embed_proj up to D, the legacy head's transform back down to E
    (dict(embedding_size=40), "deberta.embeddings.embed_proj.weight"),
])
def test_deberta_v2_variant_matches_transformers(tmp_path, changes, stored_name):
    """DeBERTa-v2 with its own position projections (c2p only), absolute positions, two segments and
    clipped (unbucketed) relative positions, through the masked-LM head and back through transformers."""
    recipe = _variant("deberta-v2", share_att_key=False, pos_att_type=["c2p"], position_biased_input=True,
                      type_vocab_size=2, norm_rel_ebd="none", position_buckets=-1, max_relative_positions=5,
                      **changes)
    ref_model, tokenizer = build("deberta-v2", "masked_lm", tmp_path, recipe=recipe)
    with safe_open(tmp_path / "model.safetensors", "np") as stored:
        names = set(stored.keys())
    assert {"deberta.encoder.layer.0.attention.self.pos_key_proj.weight", stored_name} <= names
    model = zoohub.MaskedLM.from_preset(tmp_path)
    pairs = ["good", "the city is not bad", "a"]  # segment ids reach the token-type table
    ref, mask = reference_outputs(ref_model, tokenizer, TEXTS, pairs, task="masked_lm", model_type="deberta-v2")
    enc = tokenizer(TEXTS, pairs, padding=True, return_tensors="np")
    family, mask = get_family("deberta-v2"), mask.astype(bool)
    hidden = family.forward(model.params["deberta"], model.config, dict(enc))
    logits = family.heads["masked_lm"](model.params, model.config, hidden, dict(enc))
    np.testing.assert_allclose(np.asarray(logits)[mask], ref[mask], atol=1e-4, rtol=0)
    out = model.save_to_preset(tmp_path / "saved")
    reloaded = transformers.DebertaV2ForMaskedLM.from_pretrained(out).eval()
    _matches(model, reloaded, tokenizer, "masked_lm", "deberta-v2")


def test_modernbert_first_hub_config_keys_and_a_long_sequence(tmp_path):
    """The first checkpoints' keys (global_attn_every_n_layers, global/local_rope_theta, layer_norm_eps),
    with no layer_types or rope_parameters, on a sentence several local windows long."""
    ref_model, tokenizer = build("modernbert", "backbone", tmp_path, recipe=_variant("modernbert", local_attention=8))
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("layer_types", "rope_parameters"):
        config.pop(key)
    config.update(global_rope_theta=1000.0, local_rope_theta=50.0, layer_norm_eps=1e-5, reference_compile=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    reloaded = transformers.ModernBertModel.from_pretrained(tmp_path).eval()  # transformers reads them the same
    assert reloaded.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    model = zoohub.Backbone.from_preset(tmp_path)
    long_text = [" ".join(["paris is the capital of france and it is a great city"] * 4), "a"]
    _matches(model, reloaded, tokenizer, "backbone", "modernbert", texts=long_text)


@pytest.mark.parametrize("model_type,key,value", [
    ("deberta-v2", "conv_kernel_size", 3),
    ("deberta-v2", "attention_head_size", 64),
    ("modernbert", "rope_parameters", {"full_attention": {"rope_type": "yarn", "factor": 2.0},
                                       "sliding_attention": {"rope_type": "default"}}),
    ("modernbert", "rope_scaling", {"rope_type": "linear", "factor": 2.0}),
])
def test_unimplemented_variants_are_refused_by_name(model_type, key, value):
    config_class = get_family(model_type).config_class
    base = {"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3,
            "intermediate_size": 80}
    with pytest.raises(UnsupportedConfigError, match=key):
        config_class.from_hf({**base, key: value})


def test_invalid_values_are_refused():
    base = {"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3,
            "intermediate_size": 80}
    with pytest.raises(UnsupportedConfigError, match="pos_att_type"):
        get_family("deberta-v2").config_class.from_hf({**base, "pos_att_type": "p2p"})
    with pytest.raises(UnsupportedConfigError, match="classifier_pooling"):
        get_family("modernbert").config_class.from_hf({**base, "classifier_pooling": "max"})
