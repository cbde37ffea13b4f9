"""The mixture-of-experts families beyond the generated suites: the load-balancing loss against
transformers' `aux_loss`, fit's loss including it exactly when transformers' does, experts held
stacked and saved per expert, and expert parallelism (expert tensors split over the `model` axis)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.backbones import get_family
from zoohub.presets.weights import flatten

from .conftest import left_padded_batch, torch, transformers

MOE = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
ROOT = str(Path(__file__).resolve().parents[2])


def _reference(folder, **config):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **config).float().eval()


@pytest.mark.parametrize("family", MOE)
@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_load_balancing_loss_matches_transformers_aux_loss(tiny, family, backend):
    folder, _, _ = tiny(family, "causal_lm")
    ids, mask, pos = left_padded_batch(seed=8)
    with torch.no_grad():
        ref = _reference(folder, output_router_logits=True)(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).aux_loss
    zoohub.set_backend(backend)
    lm = zoohub.CausalLM.from_preset(folder)
    inputs = {"input_ids": ids, "attention_mask": mask}
    aux = {}
    lm._outputs(lm.params, inputs, aux=aux)
    loss, weight = lm.family.aux_loss(lm.config, aux, inputs)
    assert abs(float(loss) - float(ref)) <= 1e-5 and float(ref) > 1.0  # >= 1 always; 1 only when balanced
    assert weight == 0.0  # output_router_logits is off in the file: transformers leaves it out of the loss


@pytest.mark.parametrize("family,on", [("qwen2_moe", True), ("mixtral", True), ("olmoe", False)])
def test_fit_loss_includes_the_aux_loss_as_transformers_does(tiny, family, on, tmp_path):
    folder, _, _ = tiny(family, "causal_lm")
    if on:  # as a user would switch it on: in config.json
        config = json.loads((folder / "config.json").read_text())
        folder = Path(shutil.copytree(folder, tmp_path / family))
        (folder / "config.json").write_text(json.dumps({**config, "output_router_logits": True}))
    rng = np.random.default_rng(9)
    ids = rng.integers(3, 97, (2, 7))
    with torch.no_grad():
        out = _reference(folder)(input_ids=torch.tensor(ids), attention_mask=torch.ones(2, 7, dtype=torch.long),
                                 labels=torch.tensor(ids), output_router_logits=True)
    coef = get_family(family).config_class.from_hf(json.loads((folder / "config.json").read_text())).router_aux_loss_coef
    ce = float(out.loss) - coef * float(out.aux_loss)  # transformers' loss is CE + coef * aux here
    zoohub.set_backend("jax")
    lm = zoohub.CausalLM.from_preset(folder)
    history = lm.fit({"input_ids": ids}, epochs=1, batch_size=2, learning_rate=0.0, weight_decay=0.0, shuffle=False)
    assert abs(history["aux_loss"][0] - float(out.aux_loss)) <= 1e-5
    expected = float(out.loss) if on else ce
    assert abs(history["loss"][0] - expected) <= 1e-4, (history["loss"][0], expected, ce)
    assert abs(float(out.loss) - ce) > 1e-3  # the two cases differ by more than the tolerance


def test_experts_are_held_stacked_and_saved_per_expert(tiny, tmp_path):
    folder, _, _ = tiny("mixtral", "causal_lm")
    zoohub.set_backend("numpy")
    lm = zoohub.CausalLM.from_preset(folder)
    flat = flatten(lm.params)
    assert flat["model.layers.block_sparse_moe.experts.w1.weight"].shape == (2, 4, 36, 48)  # [L, E, F, D]
    assert not [k for k in flat if ".experts.0." in k]
    saved = lm.save_to_preset(tmp_path / "saved")
    from zoohub.presets.weights import read_weights

    names = set(read_weights(saved))
    assert names == set(read_weights(folder))  # transformers' per-expert names, nothing else
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in names



def test_checkpoint_of_a_moe_decoder_stores_no_expert_twice_and_resumes(tiny, tmp_path):
    """The epoch's preset holds the experts per expert; the state folder must find them there (stacked
    [L, E, ...] as trained) rather than keep a second copy, and resuming reads them back."""
    from safetensors.numpy import load_file

    folder, _, _ = tiny("mixtral", "causal_lm")
    zoohub.set_backend("jax")
    ids = np.random.default_rng(4).integers(3, 97, (2, 7))
    lm = zoohub.CausalLM.from_preset(folder)
    lm.fit({"input_ids": ids}, epochs=1, batch_size=2, learning_rate=1e-3, checkpoint_dir=tmp_path, verbose=False)
    assert load_file(str(tmp_path / "epoch-0001.state" / "trainable.safetensors")) == {}
    again = zoohub.CausalLM.from_preset(folder)
    history = again.fit({"input_ids": ids}, epochs=1, batch_size=2, learning_rate=1e-3, checkpoint_dir=tmp_path,
                        resume=True, verbose=False)
    assert history["epoch"] == [1]
    name = "model.layers.block_sparse_moe.experts.w1.weight"
    trained = np.asarray(flatten(lm.params)[name])
    assert not np.array_equal(trained, np.asarray(flatten(zoohub.CausalLM.from_preset(folder).params)[name]))
    np.testing.assert_array_equal(np.asarray(flatten(again.params)[name]), trained)

SHARDED = """
import json, sys
import numpy as np
import zoohub
from zoohub.backend.sharding import make_mesh
from zoohub.presets.weights import flatten

out = {}
x = {"input_ids": np.array([[1, 5, 9, 14, 22, 7, 3], [2, 8, 40, 11, 6, 17, 90]], np.int32)}
for family, folder in json.loads(sys.argv[1]):
    with zoohub.backend.using("numpy"):  # the one-device reference, with nothing to compile
        plain = zoohub.CausalLM.from_preset(folder)
    sharded = zoohub.CausalLM.from_preset(folder, mesh=make_mesh(data=2, model=4))
    experts = {k: (tuple(v.sharding.spec), v.addressable_shards[0].data.shape)
               for k, v in flatten(sharded.params).items() if ".experts." in k}
    tokens = [plain.generate_tokens(x, max_new_tokens=6), sharded.generate_tokens(x, max_new_tokens=6)]
    ref = plain.logits(x)
    out[family] = {"diff": float(np.abs(sharded.logits(x) - ref).max()), "scale": float(np.abs(ref).max()),
                   "experts": experts,
                   "same_tokens": tokens[0] == tokens[1]}
print(json.dumps(out))
"""


def test_experts_split_over_the_model_axis_and_match_one_device(tiny):
    cases = [(f, str(tiny.folder(f, "causal_lm"))) for f in MOE]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    run = subprocess.run([sys.executable, "-c", SHARDED, json.dumps(cases)], capture_output=True, text=True,
                         env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for family in MOE:
        r = result[family]
        assert r["experts"], family
        for name, (spec, shard) in r["experts"].items():
            assert spec[:2] == [None, "model"], (family, name, spec)  # [L, E, ...]: E split 4 ways
            experts = get_family(family).config_class.from_hf(
                json.loads((tiny.folder(family, "causal_lm") / "config.json").read_text())).num_routed_experts
            assert shard[1] == experts // 4, (family, name, shard)
        assert r["diff"] <= 1e-5 * max(1.0, r["scale"]) and r["same_tokens"], (family, r["diff"], r["scale"])


# config.json of the catalog rows (their sizes and the keys beside them, as published)
PUBLISHED = {
    "mixtral_8x7b": dict(
        model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, router_aux_loss_coef=0.02,
        output_router_logits=False, sliding_window=None, tie_word_embeddings=False, hidden_act="silu"),
    "qwen1.5_moe_a2.7b": dict(
        model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
        num_attention_heads=16, num_key_value_heads=16, num_experts=60, num_experts_per_tok=4,
        moe_intermediate_size=1408, shared_expert_intermediate_size=5632, decoder_sparse_step=1, norm_topk_prob=False,
        max_window_layers=21, sliding_window=32768, use_sliding_window=False, rope_theta=1e6,
        router_aux_loss_coef=0.001, output_router_logits=False, tie_word_embeddings=False),
    "qwen3_30b_a3b": dict(
        model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=768, norm_topk_prob=True, mlp_only_layers=[], decoder_sparse_step=1,
        max_window_layers=48, sliding_window=None, use_sliding_window=False, rope_scaling=None, rope_theta=1e6,
        attention_bias=False, router_aux_loss_coef=0.001, output_router_logits=False, tie_word_embeddings=False),
    "olmoe_1b_7b": dict(
        model_type="olmoe", vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, clip_qkv=None,
        norm_topk_prob=False, rope_theta=10000.0, rope_scaling=None, attention_bias=False, router_aux_loss_coef=0.01,
        output_router_logits=False, tie_word_embeddings=False, pad_token_id=1, eos_token_id=50279),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_of_the_catalog_rows_load_and_give_the_rows_parameter_counts(name):
    import math

    from zoohub.presets.catalog_decoders import ROWS

    row = next(r for r in ROWS if r["name"] == name)
    hf = PUBLISHED[name]
    family = get_family(hf["model_type"])
    assert row["family"] == hf["model_type"] and len(row["revision"]) == 40
    config = family.config_class.from_hf(hf)
    shapes = {**family.shapes(config), **family.heads["causal_lm"].shapes(config, 0)}
    assert sum(math.prod(s) for s in shapes.values()) == row["params"]
    # and transformers agrees on the config's meaning: its own class reads the same expert count
    ref = getattr(transformers, family.heads["causal_lm"].architecture.replace("ForCausalLM", "Config"))(**hf)
    assert config.num_routed_experts == (getattr(ref, "num_local_experts", None) or ref.num_experts)


def test_configs_with_dense_layers_are_refused_by_name(tiny, tmp_path):
    folder = Path(shutil.copytree(tiny.folder("qwen3_moe", "causal_lm"), tmp_path / "q"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mlp_only_layers": [0]}))
    with pytest.raises(zoohub.errors.UnsupportedConfigError, match="mlp_only_layers"):
        zoohub.CausalLM.from_preset(folder)
