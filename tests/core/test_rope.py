"""Partial rotary embeddings in the layer core (`apply_rope` with cos/sin narrower than the head),
and the decoder RoPE checks that accept `partial_rotary_factor` only where a family implements it."""
from __future__ import annotations

import numpy as np
import pytest

from zoohub.backbones import get_family
from zoohub.backend import ops, using
from zoohub.errors import UnsupportedConfigError
from zoohub.layers import apply_rope, rope_cos_sin, rope_frequencies

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("factor", [0.4, 1.0])  # 0.4: 6 of 16 features rotate (Phi-2's factor); 1.0: all
def test_rope_over_the_first_features_matches_transformers_phi(backend, factor):
    from transformers.models.phi.modeling_phi import PhiRotaryEmbedding, apply_rotary_pos_emb

    theta, head, rotary = 500.0, 16, int(16 * factor)
    config = transformers.PhiConfig(hidden_size=48, num_attention_heads=3, rope_parameters=dict(
        rope_type="default", rope_theta=theta, partial_rotary_factor=factor))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, head)).astype(np.float32)          # BTNH
    positions = np.array([[0, 1, 2, 3, 4], [7, 3, 1, 0, 9]])
    xt = torch.from_numpy(x).transpose(1, 2)                          # BNTH, as transformers holds it
    cos, sin = PhiRotaryEmbedding(config)(xt, torch.from_numpy(positions))
    turned, _ = apply_rotary_pos_emb(xt[..., :rotary], xt[..., :rotary], cos, sin)
    ref = torch.cat([turned, xt[..., rotary:]], dim=-1).transpose(1, 2).numpy()
    with using(backend):
        xp = ops().xp
        inv_freq, scaling = rope_frequencies(rotary, theta)
        ours = np.asarray(apply_rope(xp.asarray(x), *rope_cos_sin(xp.asarray(positions), inv_freq, scaling)))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_array_equal(ours[..., rotary:], x[..., rotary:])  # the rest passes through untouched
    assert np.abs(ours[..., :rotary] - x[..., :rotary]).max() > 0.1       # and the first features did turn


def test_partial_rotary_factor_is_accepted_only_by_families_that_implement_it():
    sizes = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3)
    rope = dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5)
    for model_type in ("llama", "qwen3", "gemma"):
        with pytest.raises(UnsupportedConfigError, match=f"{model_type} config has rope_parameters="):
            get_family(model_type).config_class.from_hf({**sizes, "rope_parameters": rope})
    phi = get_family("phi").config_class
    assert phi.from_hf({**sizes, "rope_parameters": rope}).rotary_dim() == 8
    assert phi.from_hf({**sizes, "partial_rotary_factor": 0.25}).rotary_dim() == 4   # transformers 4.x form
    assert phi.from_hf(sizes).rotary_dim() == 8      # transformers' PhiConfig default: 0.5
    for bad in ({"partial_rotary_factor": 1.5}, {"rope_parameters": {**rope, "partial_rotary_factor": 0}}):
        with pytest.raises(UnsupportedConfigError, match="phi config has"):
            phi.from_hf({**sizes, **bad})
