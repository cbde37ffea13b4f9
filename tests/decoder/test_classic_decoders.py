"""What the generated suites cannot see in stablelm, starcoder2, gpt_neox, gptj and gpt_neo: the other
setting of each switch the tiny recipes turn on (StableLM's sequential block without q/k norms,
NeoX's sequential residual, StarCoder2 without biases or window), NeoX's transformers 4.x config form
(`rotary_pct`, `rotary_emb_base`), that GPT-Neo's local window really bites in the recipe, GPT-J's
interleaved partial RoPE against transformers' own, and the published configs of the catalog rows."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import shutil

import numpy as np
import pytest

import zoohub
from zoohub.backbones import FAMILY_MODULES, get_family
from zoohub.backend import ops, using
from zoohub.presets.catalog_decoders import ROWS
from zoohub.tasks.generation import trim_row

from tests.tiny import build

from .conftest import left_padded_batch, torch, torch_logits, transformers



@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """{name: (folder, torch model)}: each recipe with the switches it turns on turned off."""
    changes = {
        "stablelm": dict(use_parallel_residual=False, qk_layernorm=False, use_qkv_bias=False),
        "gpt_neox": dict(use_parallel_residual=False, attention_bias=False),
        "starcoder2": dict(use_bias=False, sliding_window=None),
    }
    out = {}
    for model_type, change in changes.items():
        module = importlib.import_module(FAMILY_MODULES[model_type])
        family = module.FAMILIES[model_type]
        recipe = dataclasses.replace(family.recipe, kwargs={**family.recipe.kwargs, **change})
        module.FAMILIES[model_type] = dataclasses.replace(family, recipe=recipe)
        try:
            folder = tmp_path_factory.mktemp(model_type)
            out[model_type] = (folder, build(model_type, "causal_lm", folder)[0])
        finally:
            module.FAMILIES[model_type] = family
    return out


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("model_type", ["stablelm", "gpt_neox", "starcoder2"])
def test_the_other_setting_of_each_switch_matches_transformers(variants, model_type, backend):
    folder, model = variants[model_type]
    zoohub.set_backend(backend)
    lm = zoohub.CausalLM.from_preset(folder)
    ids, mask, pos = left_padded_batch(seed=11)
    assert np.abs(lm.logits({"input_ids": ids, "attention_mask": mask}) - torch_logits(model, ids, mask, pos))[
        mask == 1].max() <= 1e-4
    ids, mask, _ = left_padded_batch(seed=12, lengths=(8, 5))
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pad_token_id=0,
                             eos_token_id=2, max_new_tokens=12, do_sample=False).numpy()[:, ids.shape[1]:]
    ours = lm.generate_tokens({"input_ids": ids, "attention_mask": mask}, max_new_tokens=12)
    assert ours == [trim_row(r, [2]) for r in ref]


def test_gpt_neox_transformers_4_config_form_gives_same_logits(checkpoints, torch_models, tmp_path):
    """Pythia's config.json (4.x) spells RoPE as top-level `rotary_pct` and `rotary_emb_base`."""
    zoohub.set_backend("numpy")
    folder = tmp_path / "gpt_neox"
    shutil.copytree(checkpoints["gpt_neox"], folder)
    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=rope["rope_theta"])
    (folder / "config.json").write_text(json.dumps(config))
    lm = zoohub.CausalLM.from_preset(folder)
    assert (lm.config.rotary_dim(), lm.config.rope()[0]) == (6, 3300.0)
    ids, mask, pos = left_padded_batch(seed=13)
    ours = lm.logits({"input_ids": ids, "attention_mask": mask})
    assert np.abs(ours - torch_logits(torch_models["gpt_neox"], ids, mask, pos))[mask == 1].max() <= 1e-4


def test_gpt_neo_recipe_window_changes_the_logits(checkpoints, torch_models, tmp_path):
    """The recipe's local window (4) is shorter than the test prompts: the same weights with a window
    past the prompt give other logits, so the parity suites test the local mask."""
    zoohub.set_backend("numpy")
    folder = tmp_path / "gpt_neo"
    shutil.copytree(checkpoints["gpt_neo"], folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["window_size"] == 4 and config["attention_layers"] == ["global", "local"]
    (folder / "config.json").write_text(json.dumps({**config, "window_size": 128}))
    ids, mask, pos = left_padded_batch(seed=14)
    wide = zoohub.CausalLM.from_preset(folder).logits({"input_ids": ids, "attention_mask": mask})
    ref = torch_logits(torch_models["gpt_neo"], ids, mask, pos)
    assert np.abs(wide - ref)[mask == 1].max() > 1e-2


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_gptj_interleaved_partial_rope_matches_transformers(backend):
    from transformers.models.gptj.modeling_gptj import GPTJRotaryEmbedding, apply_rotary_pos_emb

    from zoohub.layers import apply_rope, rope_cos_sin, rope_frequencies

    rotary, head = 6, 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, head)).astype(np.float32)          # BTNH, as GPT-J holds it there
    positions = np.array([[0, 1, 2, 3, 4], [7, 3, 1, 0, 9]])
    config = transformers.GPTJConfig(n_embd=48, n_head=3, rotary_dim=rotary, n_positions=16)
    sin, cos = GPTJRotaryEmbedding(config)(torch.from_numpy(x), torch.from_numpy(positions))
    xt = torch.from_numpy(x)
    ref = torch.cat([apply_rotary_pos_emb(xt[..., :rotary], sin, cos), xt[..., rotary:]], dim=-1).numpy()
    with using(backend):
        xp = ops().xp
        table = rope_cos_sin(xp.asarray(positions), rope_frequencies(rotary, 10000.0)[0], interleaved=True)
        ours = np.asarray(apply_rope(xp.asarray(x), *table, interleaved=True))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    halves = np.asarray(apply_rope(x, *rope_cos_sin(positions, rope_frequencies(rotary, 10000.0)[0])))
    assert np.abs(halves - ref).max() > 0.1  # the Llama-style rotation is a different function


# config.json of the catalog rows as published (transformers 4.x exports), token ids left out
PUBLISHED = {
    "stablelm2_1.6b": {
        "architectures": ["StableLmForCausalLM"], "model_type": "stablelm", "vocab_size": 100352,
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 32,
        "num_key_value_heads": 32, "hidden_act": "silu", "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": 1e-05, "max_position_embeddings": 4096,
        "partial_rotary_factor": 0.25, "qk_layernorm": False, "rope_scaling": None, "rope_theta": 10000,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "use_parallel_residual": False,
        "use_qkv_bias": True},
    "starcoder2_3b": {
        "architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2", "vocab_size": 49152,
        "hidden_size": 3072, "intermediate_size": 12288, "num_hidden_layers": 30, "num_attention_heads": 24,
        "num_key_value_heads": 2, "hidden_act": "gelu_pytorch_tanh", "attention_dropout": 0.1,
        "residual_dropout": 0.1, "embedding_dropout": 0.1, "initializer_range": 0.018042,
        "max_position_embeddings": 16384, "mlp_type": "default", "norm_epsilon": 1e-05,
        "rope_theta": 999999.4420358813, "sliding_window": 4096, "torch_dtype": "float32", "use_bias": True,
        "use_cache": True},
    **{f"pythia_{size}": {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": d,
        "intermediate_size": 4 * d, "num_hidden_layers": layers, "num_attention_heads": heads, "hidden_act": "gelu",
        "initializer_range": 0.02, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "rotary_emb_base": 10000,
        "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16", "use_cache": True,
        "use_parallel_residual": True} for size, d, layers, heads in (("70m", 512, 6, 8), ("160m", 768, 12, 12),
                                                                       ("410m", 1024, 24, 16))},
    "gptj_6b": {
        "architectures": ["GPTJForCausalLM"], "model_type": "gptj", "vocab_size": 50400, "n_embd": 4096, "n_layer": 28,
        "n_head": 16, "n_inner": None, "n_positions": 2048, "rotary": True, "rotary_dim": 64, "activation_function":
        "gelu_new", "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "gradient_checkpointing": False,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "scale_attn_weights": True,
        "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True, "tie_word_embeddings": False,
        "tokenizer_class": "GPT2Tokenizer", "use_cache": True},
    "gpt_neo_125m": {
        "architectures": ["GPTNeoForCausalLM"], "model_type": "gpt_neo", "vocab_size": 50257, "hidden_size": 768,
        "num_layers": 12, "num_heads": 12, "intermediate_size": None, "max_position_embeddings": 2048,
        "attention_types": [[["global", "local"], 6]], "attention_layers": ["global", "local"] * 6,
        "window_size": 256, "activation_function": "gelu_new", "attention_dropout": 0, "embed_dropout": 0,
        "resid_dropout": 0, "gradient_checkpointing": False, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
        "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True, "use_cache": True},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_of_the_catalog_rows_load_and_give_their_parameter_counts(name):
    row = next(r for r in ROWS if r["name"] == name)
    hf = PUBLISHED[name]
    family = get_family(row["family"])
    assert hf["model_type"] == row["family"] and hf["architectures"] == [family.heads["causal_lm"].architecture]
    config = family.config_class.from_hf(hf)
    head = family.heads["causal_lm"]
    tied = head.tied if config.tie_word_embeddings else ()
    shapes = {**family.shapes(config), **{k: s for k, s in head.shapes(config, 0).items() if k not in tied}}
    assert sum(math.prod(s) for s in shapes.values()) == row["params"]
