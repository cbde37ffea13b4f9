"""T5 variants beyond the family recipes: v1.1 / Flan-T5 (gated GELU, an lm_head of its own, no output
rescaling) as transformers 5 stores it (tie_word_embeddings=true, scale_decoder_outputs=false, lm_head
present), and the relative-position bucket table at transformers' log-spaced boundaries."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import transformers

import zoohub
from tests.seq2seq.conftest import SOURCES, TARGETS
from tests.tiny import build, recipe_of
from zoohub.backend import using


def test_flan_t5_shaped_untied_head_matches_and_round_trips(tmp_path):
    recipe = recipe_of("t5")
    recipe = dataclasses.replace(recipe, seed=53, kwargs={**recipe.kwargs, "feed_forward_proj": "gated-gelu",
                                                          "tie_word_embeddings": False, "initializer_factor": 0.5})
    model, tokenizer = build("t5", "seq2seq_lm", tmp_path / "v11", recipe)
    with torch.no_grad():  # transformers 5 ties every T5 head; give it one of its own, as Flan-T5 has
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * 0.5)
    model.save_pretrained(tmp_path / "v11")
    reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "v11").eval()
    assert not torch.equal(reference.lm_head.weight, reference.shared.weight)
    enc = tokenizer(SOURCES, padding=True, return_tensors="pt")
    labels = tokenizer(TARGETS, padding=True, return_tensors="pt").input_ids
    real = (labels != tokenizer.pad_token_id).numpy()
    with torch.no_grad():
        ref = reference(**enc, labels=labels).logits.numpy()
    with using("numpy"):
        ours = zoohub.Seq2SeqLM.from_preset(tmp_path / "v11")
        assert ours.config.is_gated and not ours.config.scales_decoder_output
        np.testing.assert_allclose(ours.logits(SOURCES, TARGETS)[real], ref[real], atol=1e-4)
        saved = ours.save_to_preset(tmp_path / "saved")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(saved).eval()
    with torch.no_grad():
        np.testing.assert_allclose(again(**enc, labels=labels).logits.numpy()[real], ref[real], atol=1e-4)


def test_bucket_table_equals_transformers_at_the_default_sizes():
    from transformers.models.t5.modeling_t5 import T5Attention

    from zoohub.backbones.t5 import _bucket_table

    rel = torch.arange(-128, 129)
    for bidirectional in (True, False):
        ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        np.testing.assert_array_equal(_bucket_table(32, 128, bidirectional), ref.numpy())
