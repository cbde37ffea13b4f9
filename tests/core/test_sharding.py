"""Sharded loading, training and generation on 8 simulated CPU devices match one device."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])

# Writes a tiny BertForSequenceClassification to `d` (hidden 48 splits over 4 "model" devices).
TINY_BERT = """
    import json, pathlib, sys, tempfile
    import numpy as np
    import jax
    import zoohub
    from zoohub.backbones import get_family
    from zoohub.backend.sharding import make_mesh
    from zoohub.presets.weights import write_weights

    assert len(jax.devices()) == 8
    cfg = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 96,
           "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 80,
           "max_position_embeddings": 16, "id2label": {"0": "a", "1": "b"}}
    fam = get_family("bert"); c = fam.config_class.from_hf(cfg)
    shapes = {f"bert.{k}": s for k, s in {**fam.shapes(c), **fam.optional_shapes(c)}.items()}
    shapes.update(fam.heads["text_classifier"].shapes(c, 2))
    rng = np.random.default_rng(0)
    d = pathlib.Path(tempfile.mkdtemp())
    write_weights({k: rng.normal(0, 0.3, size=s).astype(np.float32) for k, s in shapes.items()}, d)
    (d / "config.json").write_text(json.dumps(cfg))

    def layer0(model, path):
        node = model.params["bert"]["encoder"]["layer"]["0"]
        for part in path.split("."):
            node = node[part]
        return node
"""


def run_on_8_devices(body: str) -> str:
    """Run TINY_BERT + body in a fresh interpreter with 8 CPU devices; its last line of output."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    code = textwrap.dedent(TINY_BERT) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_tensor_and_data_parallel_match_single_device():
    result = json.loads(run_on_8_devices("""
        ids = rng.integers(1, 96, size=(8, 12))
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        plain = zoohub.TextClassifier.from_preset(d).logits(inputs)
        sharded = zoohub.TextClassifier.from_preset(d, mesh=make_mesh(data=2, model=4))
        q, out_proj = layer0(sharded, "attention.self.query.weight"), layer0(sharded, "output.dense.weight")
        print(json.dumps({
            "max_diff": float(np.abs(sharded.logits(inputs) - plain).max()),
            "query_spec": list(q.sharding.spec), "query_shard": list(q.addressable_shards[0].data.shape),
            "down_spec": list(out_proj.sharding.spec), "down_shard": list(out_proj.addressable_shards[0].data.shape),
        }))
    """))
    assert result["max_diff"] < 1e-5
    assert result["query_spec"] == ["model", None] and result["query_shard"] == [12, 48]
    assert result["down_spec"] == [None, "model"] and result["down_shard"] == [48, 20]


def test_fit_on_a_mesh_matches_single_device_training():
    result = json.loads(run_on_8_devices("""
        ids = rng.integers(1, 96, size=(32, 12)).astype(np.int32)
        x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        y = (ids[:, 1] > 48).astype(np.int64)
        args = dict(epochs=2, batch_size=8, learning_rate=1e-3, shuffle=False, verbose=False, seed=3)
        h1 = zoohub.TextClassifier.from_preset(d).fit(x, y, **args)
        sharded = zoohub.TextClassifier.from_preset(d, mesh=make_mesh(data=2, model=4))
        h2 = sharded.fit(x, y, **args)
        q = layer0(sharded, "attention.self.query.weight")
        print(json.dumps({"plain": h1["step_loss"], "sharded": h2["step_loss"],
                          "query_shard": list(q.addressable_shards[0].data.shape)}))
    """))
    assert len(result["plain"]) == 8
    assert max(abs(a - b) for a, b in zip(result["plain"], result["sharded"])) < 1e-4
    assert result["plain"][-1] < result["plain"][0]  # it learned
    assert result["query_shard"] == [12, 48]  # still tensor-parallel after training


def test_generation_on_a_mesh_matches_single_device():
    assert run_on_8_devices(f"""
        sys.path.insert(0, {ROOT!r})
        from tests.tiny import build
        path = pathlib.Path(tempfile.mkdtemp())
        build("llama", "causal_lm", path)
        prompts = ["the cat sat", "a dog"]
        a = zoohub.CausalLM.from_preset(path).generate(prompts, max_new_tokens=10)
        b = zoohub.CausalLM.from_preset(path, mesh=make_mesh(data=2, model=4)).generate(prompts, max_new_tokens=10)
        print(a == b and len(a[0]) > 0)
    """) == "True"


def test_a_large_tensor_no_rule_names_is_logged_when_replicated(caplog):
    import numpy as np

    from zoohub.backend.sharding import REPLICATE_WARN_BYTES, make_mesh, place

    mesh = make_mesh(model=1)
    big = np.zeros((REPLICATE_WARN_BYTES // 4 + 1,), np.float32)
    with caplog.at_level("WARNING", logger="zoohub"):
        place({"unnamed.weight": big, "small.weight": np.zeros(3, np.float32), "named.weight": big},
              mesh, {"named.weight": ()})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "unnamed.weight" in warned[0] and "no tensor-parallel rule" in warned[0]
