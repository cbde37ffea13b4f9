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


SHARDED = """
import json, sys
import numpy as np
import zoohub
from zoohub.backend.sharding import make_mesh
from zoohub.presets.weights import flatten

out = {}
x = {"input_ids": np.array([[1, 5, 9, 14, 22, 7, 3], [2, 8, 40, 11, 6, 17, 90]], np.int32)}
for family, folder in json.loads(sys.argv[1]):
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
