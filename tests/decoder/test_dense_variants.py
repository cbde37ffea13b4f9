"""What the generated suites cannot see in phi3, smollm3, olmo2, granite and cohere: Phi-3's LongRoPE
below the original length (the tiny recipe's test prompts all run past it) and its older config forms,
how the fused tensors shard, and the published configs of the catalog rows (they load, and give the
rows' parameter counts)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import zoohub
from zoohub.backbones import get_family
from zoohub.backbones.layout import tensor_spec
from zoohub.presets.catalog_decoders import ROWS

from .conftest import left_padded_batch, torch_logits, transformers



@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_phi3_longrope_short_and_long_factors_match_transformers(tiny, backend):
    """The recipe's original length is 6: a batch whose longest row has 5 tokens runs on the short
    factors, one with an 8-token row on the long factors, for every row (as transformers picks)."""
    folder, model, _ = tiny("phi3", "causal_lm")
    zoohub.set_backend(backend)
    lm = zoohub.CausalLM.from_preset(folder)
    outputs = []
    for lengths in ((5, 3), (8, 5, 3)):
        ids, mask, pos = left_padded_batch(seed=9, lengths=lengths)
        ours = lm.logits({"input_ids": ids, "attention_mask": mask})
        assert np.abs(ours - torch_logits(model, ids, mask, pos))[mask == 1].max() <= 1e-4
        outputs.append(ours[-2:, -5:])  # the rows of 5 and 3 tokens, the same ids in both batches
    # the same rows give other logits once a longer row switches the batch to the long factors
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-2


def test_phi3_transformers_4_config_form_gives_same_logits(tiny, tmp_path):
    """Phi-3 checkpoints on the hub spell RoPE as top-level rope_theta, partial_rotary_factor and
    original_max_position_embeddings beside a rope_scaling of type "su" (or "longrope")."""
    folder, model, _ = tiny("phi3", "causal_lm")
    zoohub.set_backend("numpy")
    shutil.copytree(folder, tmp_path / "phi3")
    config = json.loads((tmp_path / "phi3" / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.update(rope_theta=rope.pop("rope_theta"), partial_rotary_factor=rope.pop("partial_rotary_factor"),
                  rope_scaling={"type": "su", "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]},
                  auto_map={"AutoConfig": "configuration_phi3.Phi3Config"}, attention_bias=False)
    assert config["original_max_position_embeddings"] == 6  # only at the top level now
    (tmp_path / "phi3" / "config.json").write_text(json.dumps(config))
    ids, mask, pos = left_padded_batch(seed=10)
    ours = zoohub.CausalLM.from_preset(tmp_path / "phi3").logits({"input_ids": ids, "attention_mask": mask})
    assert np.abs(ours - torch_logits(model, ids, mask, pos))[mask == 1].max() <= 1e-4


def test_phi3_fused_tensors_split_over_their_input_features():
    """q | k | v and gate | up row blocks do not line up with equal row shards, so the fused weights
    (and the projections fed by them) split their input columns: every shard holds all output rows."""
    family = get_family("phi3")
    for name in ("self_attn.qkv_proj", "mlp.gate_up_proj", "self_attn.o_proj", "mlp.down_proj"):
        assert tensor_spec(family, f"model.layers.{name}.weight", stacked=True) == (None, None, "model")
    assert tensor_spec(family, "model.embed_tokens.weight", stacked=False) == ("model", None)


def test_phi3_refuses_rope_types_its_transformers_class_does_not_run():
    config_class = get_family("phi3").config_class
    sizes = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3)
    for rope in ({"rope_type": "yarn", "factor": 2.0}, {"rope_type": "llama3", "factor": 2.0}):
        with pytest.raises(zoohub.errors.UnsupportedConfigError, match="phi3 config has rope_parameters="):
            config_class.from_hf({**sizes, "rope_parameters": rope})
    with pytest.raises(zoohub.errors.UnsupportedConfigError, match="phi3 config has mlp_bias=True"):
        config_class.from_hf({**sizes, "mlp_bias": True})


# config.json of the catalog rows (sizes and the keys beside them, as published; long factor lists shortened
# to constants of the right length)
PUBLISHED = {
    "phi3.5_mini_instruct": dict(
        model_type="phi3", vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=131072,
        original_max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=262144,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.5] * 48},
        auto_map={"AutoConfig": "configuration_phi3.Phi3Config"}, attention_bias=False, embd_pdrop=0.0,
        resid_pdrop=0.0, tie_word_embeddings=False),
    "phi4_mini_instruct": dict(
        model_type="phi3", vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=24, num_key_value_heads=8, max_position_embeddings=131072,
        original_max_position_embeddings=4096, partial_rotary_factor=0.75, rope_theta=10000.0,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.5] * 48},
        sliding_window=262144, full_attn_mod=1, interpolate_factor=1, lm_head_bias=False, mlp_bias=False,
        attention_bias=False, auto_map={"AutoConfig": "configuration_phi3.Phi3Config"}, tie_word_embeddings=True),
    "smollm3_3b": dict(
        model_type="smollm3", vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=65536, max_window_layers=28,
        no_rope_layer_interval=4, no_rope_layers=[int((i + 1) % 4 != 0) for i in range(36)], pretraining_tp=2,
        rope_theta=5_000_000.0, rope_scaling=None, sliding_window=None, use_sliding_window=False,
        tie_word_embeddings=True),
    "olmo2_1b": dict(
        model_type="olmo2", vocab_size=100352, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_theta=500000, rope_scaling=None, attention_bias=False, tie_word_embeddings=False),
    "granite3.3_2b_instruct": dict(
        model_type="granite", vocab_size=49159, hidden_size=2048, intermediate_size=8192, num_hidden_layers=40,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, attention_multiplier=0.015625,
        embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0, rope_theta=10_000_000.0,
        mlp_bias=False, attention_bias=False, tie_word_embeddings=True),
    "command_r_35b": dict(
        model_type="cohere", vocab_size=256000, hidden_size=8192, intermediate_size=22528, num_hidden_layers=40,
        num_attention_heads=64, num_key_value_heads=64, max_position_embeddings=8192, layer_norm_eps=1e-5,
        logit_scale=0.0625, rope_theta=8_000_000.0, use_qk_norm=False, attention_bias=False),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_catalog_rows_configs_load_and_count_the_rows_parameters(name):
    row = next(r for r in ROWS if r["name"] == name)
    family = get_family(row["family"])
    config = family.config_class.from_hf(PUBLISHED[name])
    shapes = {**family.shapes(config), **family.heads["causal_lm"].shapes(config, 0)}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    assert sum(math.prod(s) for s in shapes.values()) == row["params"]


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 3.0},
                                  {"rope_type": "longrope", "short_factor": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                                   "long_factor": [2.0, 4.0, 8.0, 16.0, 3.0, 9.0, 27.0, 81.0],
                                   "original_max_position_embeddings": 6}])
def test_cohere_rope_scaling_turns_pairs_as_transformers(tiny, tmp_path, rope):
    """Scaled RoPE tables (any type the decoders share) with Cohere's interleaved pairs."""
    folder, _, _ = tiny("cohere", "causal_lm")
    zoohub.set_backend("numpy")
    shutil.copytree(folder, tmp_path / "cohere")
    config = json.loads((tmp_path / "cohere" / "config.json").read_text())
    config["rope_parameters"] = {**rope, "rope_theta": config["rope_parameters"]["rope_theta"]}
    (tmp_path / "cohere" / "config.json").write_text(json.dumps(config))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "cohere", attn_implementation="eager").eval()
    ids, mask, pos = left_padded_batch(seed=11)
    ours = zoohub.CausalLM.from_preset(tmp_path / "cohere").logits({"input_ids": ids, "attention_mask": mask})
    assert np.abs(ours - torch_logits(model, ids, mask, pos))[mask == 1].max() <= 1e-4
