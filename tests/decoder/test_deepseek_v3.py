"""DeepSeek-V3 beyond its generated suites: the layouts its one recipe does not cover (a plain q_proj,
RoPE over halves, no dense layers or no sparse ones, values wider than keys, biases, no YaRN) with a
random `e_score_correction_bias` (transformers initialises it to zeros, which would hide a wrong use),
each against transformers on both backends, greedy through the jax KV cache and saved back; layers
of the sparse block only held [L - k, ...] and saved under their own numbers; config values zoohub
does not compute refused by name; the catalog row's published config and parameter count."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import zoohub
from zoohub.backbones import get_family
from zoohub.backbones.layout import stack_layers, unstack_layers
from zoohub.errors import UnsupportedConfigError
from zoohub.presets.catalog_decoders import ROWS

from tests.tiny import build

from .conftest import (assert_greedy_matches, assert_saved_loads_in_transformers, left_padded_batch, torch,
                       torch_logits, transformers)


def _variant(**changes):
    recipe = get_family("deepseek_v3").recipe
    return dataclasses.replace(recipe, kwargs={**recipe.kwargs, **changes})


VARIANTS = {
    # DeepSeek-V2-Lite / Moonlight's attention: no q bottleneck; RoPE over halves; every layer sparse, top-k
    # weights left unnormalised; biases; values (24) wider than keys (12 + 8), so the keys are the padded ones
    "plain-q": _variant(q_lora_rank=None, rope_interleave=False, first_k_dense_replace=0, norm_topk_prob=False,
                        attention_bias=True, v_head_dim=24, rope_parameters=dict(rope_type="default", rope_theta=600.0)),
    # two dense layers then one sparse, groups of 4 experts (top-2 sum over 4), one group kept
    "two-dense": _variant(first_k_dense_replace=2, n_group=2, topk_group=1, num_experts_per_tok=2),
    # every layer dense (no sparse tensors at all), YaRN without an mscale pair
    "all-dense": _variant(first_k_dense_replace=3, rope_parameters=dict(
        rope_type="yarn", rope_theta=800.0, factor=3.0, original_max_position_embeddings=40)),
}
# What each variant is run through, to keep the file to seconds: the jax KV cache where keys are padded
BACKENDS = {"plain-q": ("numpy", "jax"), "two-dense": ("numpy", "jax"), "all-dense": ("numpy",)}


@pytest.fixture(scope="module")
def variant(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    model, _ = build("deepseek_v3", "causal_lm", folder, recipe=VARIANTS[name])
    with torch.no_grad():  # a correction bias as large as the sigmoid scores, so it changes the choice
        for key, buffer in model.named_buffers():
            if key.endswith("e_score_correction_bias"):
                buffer.copy_(torch.randn_like(buffer) * 0.4)
    model.save_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").float().eval()
    return name, folder, model



@pytest.mark.parametrize("variant", list(VARIANTS), indirect=True)
def test_variant_matches_transformers(variant, tmp_path):
    name, folder, model = variant
    ids, mask, pos = left_padded_batch()
    ref = torch_logits(model, ids, mask, pos)
    for backend in BACKENDS[name]:
        zoohub.set_backend(backend)
        lm = zoohub.CausalLM.from_preset(folder)
        ours = lm.logits({"input_ids": ids, "attention_mask": mask})
        assert np.abs(ours - ref)[mask == 1].max() <= 1e-4, (name, backend)
        if name != "all-dense":  # the bias is used: zeroing it changes the logits
            zeroed = {**lm.params}
            lm.params = _zero_bias(lm.params)
            assert np.abs(lm.logits({"input_ids": ids, "attention_mask": mask}) - ref)[mask == 1].max() > 1e-2
            lm.params = zeroed

    if name == "plain-q":  # jax: greedy decoding through the KV cache, where the keys are the padded ones
        assert_greedy_matches(lm, model)
    assert_saved_loads_in_transformers(lm, model, tmp_path / "saved")


def _zero_bias(tree):
    if isinstance(tree, dict):
        return {k: (v * 0 if k == "e_score_correction_bias" else _zero_bias(v)) for k, v in tree.items()}
    return tree


def test_sparse_layers_are_held_from_their_first_layer_and_saved_under_their_numbers():
    trailing = get_family("deepseek_v3").trailing_layers
    flat = {f"layers.{i}.self_attn.o_proj.weight": np.full((2, 2), i) for i in range(4)}
    flat.update({f"layers.{i}.mlp.gate_proj.weight": np.full((3,), i) for i in range(1)})
    flat.update({f"layers.{i}.mlp.gate.weight": np.full((5,), i) for i in range(1, 4)})
    stacked = {k: np.asarray(v) for k, v in stack_layers(flat, "layers").items()}
    assert stacked["layers.self_attn.o_proj.weight"].shape == (4, 2, 2)
    assert stacked["layers.mlp.gate_proj.weight"].shape == (1, 3)
    assert stacked["layers.mlp.gate.weight"][:, 0].tolist() == [1, 2, 3]      # layers 1..3, in order
    back = unstack_layers(stacked, "layers", trailing)
    assert set(back) == set(flat) and all(np.array_equal(back[k], flat[k]) for k in flat)
    gap = {**flat, "layers.1.mlp.up.weight": np.zeros(1), "layers.2.mlp.up.weight": np.zeros(1)}  # not up to layer 3
    with pytest.raises(ValueError, match=r"layers \[1, 2\] are not numbered 2..3"):
        stack_layers(gap, "layers")


V3 = {"vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
      "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
      "n_routed_experts": 256, "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
      "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
      "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
      "norm_topk_prob": True, "scoring_func": "sigmoid", "aux_loss_alpha": 0.001, "seq_aux": True, "ep_size": 1,
      "num_nextn_predict_layers": 1, "max_position_embeddings": 163840, "rope_theta": 10000, "hidden_act": "silu",
      "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                       "original_max_position_embeddings": 4096, "type": "yarn"},
      "architectures": ["DeepseekV3ForCausalLM"], "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"},
      "model_type": "deepseek_v3", "torch_dtype": "bfloat16", "tie_word_embeddings": False, "attention_bias": False}


def test_the_catalog_rows_published_config_loads_and_gives_the_rows_parameter_count():
    import math

    family = get_family("deepseek_v3")
    config = family.config_class.from_hf(V3)
    count = sum(math.prod(s) for s in {**family.shapes(config), **family.heads["causal_lm"].shapes(config, 0)}.values())
    rows = [r for r in ROWS if r["family"] == "deepseek_v3"]
    assert rows and all(r["params"] == count for r in rows)
    # the multi-token-prediction layer the hub repos store is skipped, as transformers skips it
    assert family.is_ignored("model.layers.61.eh_proj.weight") and not family.is_ignored("model.layers.60.mlp.gate.weight")


@pytest.mark.parametrize("key,value,match", [
    ("quantization_config", {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}, "FP8"),
    ("scoring_func", "softmax", "sigmoid"),
    ("topk_method", "greedy", "noaux_tc"),
    ("moe_layer_freq", 2, "every layer after first_k_dense_replace"),
    ("num_key_value_heads", 16, "must equal num_attention_heads"),
])
def test_config_values_zoohub_does_not_compute_are_refused_by_name(key, value, match):
    with pytest.raises(UnsupportedConfigError, match=match):
        get_family("deepseek_v3").config_class.from_hf({**V3, key: value})


def test_lora_on_modules_of_the_sparse_layers_only_names_their_layers(tiny, tmp_path):
    """PEFT itself cannot check this one: with transformers 5's fused-expert conversion it re-aims a
    `down_proj` target at the routed experts. So: the adapter names modules the transformers model has,
    reloads to the same outputs, and merged gives transformers' outputs."""
    from safetensors.numpy import load_file

    from zoohub.presets.weights import flatten, unflatten

    folder, model, _ = tiny("deepseek_v3", "causal_lm")
    zoohub.set_backend("numpy")
    lm = zoohub.CausalLM.from_preset(folder)
    adapted = lm.enable_lora(rank=2, alpha=4, targets=["down_proj", "q_b_proj"])  # dense layer 0, shared experts 1-2
    assert "model.layers.2.mlp.shared_experts.down_proj" in adapted and "model.layers.0.mlp.down_proj" in adapted
    rng = np.random.default_rng(1)
    lm.params = unflatten({k: (rng.normal(0, 0.3, v.shape).astype(v.dtype) if k.endswith("lora_B.weight") else v)
                           for k, v in flatten(lm.params).items()})
    ids, mask, pos = left_padded_batch(seed=2)
    ours = lm.logits({"input_ids": ids, "attention_mask": mask})
    adapter = lm.save_lora(tmp_path / "adapter")
    modules = {name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
               for name in load_file(adapter / "adapter_model.safetensors")}
    assert modules == set(adapted) and modules <= dict(model.named_modules()).keys()
    fresh = zoohub.CausalLM.from_preset(folder)
    fresh.load_lora(adapter)
    assert np.abs(fresh.logits({"input_ids": ids, "attention_mask": mask}) - ours).max() <= 1e-6
    merged = transformers.AutoModelForCausalLM.from_pretrained(lm.save_to_preset(tmp_path / "merged"),
                                                               attn_implementation="eager").float().eval()
    assert np.abs(torch_logits(merged, ids, mask, pos) - ours)[mask == 1].max() <= 1e-4
