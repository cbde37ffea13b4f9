"""Sharded loading on 8 simulated CPU devices gives the same outputs as one device."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = """
    import json, pathlib, tempfile
    import numpy as np
    import jax
    from jax.sharding import PartitionSpec as P
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
    ids = rng.integers(1, 96, size=(8, 12))
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    plain = zoohub.TextClassifier.from_preset(d).logits(inputs)
    mesh = make_mesh(data=2, model=4)
    sharded = zoohub.TextClassifier.from_preset(d, mesh=mesh)
    q = sharded.params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["weight"]
    out_proj = sharded.params["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["weight"]
    print(json.dumps({
        "max_diff": float(np.abs(sharded.logits(inputs) - plain).max()),
        "query_spec": list(q.sharding.spec), "query_shard": list(q.addressable_shards[0].data.shape),
        "down_spec": list(out_proj.sharding.spec), "down_shard": list(out_proj.addressable_shards[0].data.shape),
    }))
"""


def test_tensor_and_data_parallel_match_single_device():
    import json

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["max_diff"] < 1e-5
    assert result["query_spec"] == ["model", None] and result["query_shard"] == [12, 48]
    assert result["down_spec"] == [None, "model"] and result["down_shard"] == [48, 20]


FIT_SCRIPT = """
    import json, pathlib, tempfile
    import numpy as np
    import jax
    import zoohub
    from zoohub.backbones import get_family
    from zoohub.backend.sharding import make_mesh
    from zoohub.presets.weights import write_weights

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
    ids = rng.integers(1, 96, size=(32, 12)).astype(np.int32)
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    y = (ids[:, 1] > 48).astype(np.int64)
    args = dict(epochs=2, batch_size=8, learning_rate=1e-3, shuffle=False, verbose=False, seed=3)
    plain = zoohub.TextClassifier.from_preset(d)
    h1 = plain.fit(x, y, **args)
    sharded = zoohub.TextClassifier.from_preset(d, mesh=make_mesh(data=2, model=4))
    h2 = sharded.fit(x, y, **args)
    q = sharded.params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["weight"]
    print(json.dumps({"plain": h1["step_loss"], "sharded": h2["step_loss"], "query_shard": list(q.addressable_shards[0].data.shape)}))
"""


def test_fit_on_a_mesh_matches_single_device_training():
    import json

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(FIT_SCRIPT)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["plain"]) == 8
    assert max(abs(a - b) for a, b in zip(result["plain"], result["sharded"])) < 1e-4
    assert result["plain"][-1] < result["plain"][0]  # it learned
    assert result["query_shard"] == [12, 48]  # still tensor-parallel after training


GENERATE_SCRIPT = """
    import sys, tempfile
    sys.path.insert(0, {root!r})
    from tests.decoder.conftest import _build
    import zoohub
    from zoohub.backend.sharding import make_mesh
    path = _build("llama", tempfile.mkdtemp())
    prompts = ["the cat sat", "a dog"]
    a = zoohub.CausalLM.from_preset(path).generate(prompts, max_new_tokens=10)
    b = zoohub.CausalLM.from_preset(path, mesh=make_mesh(data=2, model=4)).generate(prompts, max_new_tokens=10)
    print(a == b and len(a[0]) > 0)
"""


def test_generation_on_a_mesh_matches_single_device():
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(GENERATE_SCRIPT.format(root=root))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True"
