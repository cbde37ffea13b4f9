"""LongRoPE (Phi-3's `longrope`) and interleaved RoPE (Cohere's) in the layer core, against
transformers' own tables (`ROPE_INIT_FUNCTIONS`) and rotation functions."""
from __future__ import annotations

import numpy as np
import pytest

from zoohub.backend import ops, using
from zoohub.layers import apply_rope, rope_cos_sin, rope_frequencies
from zoohub.layers.rope import longrope_cos_sin

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHORT = [1.0, 1.3, 2.0, 2.5, 3.0, 7.0]
LONG = [1.5, 4.0, 9.0, 20.0, 33.0, 60.0]


def _phi3_config(**rope):
    return transformers.Phi3Config(hidden_size=48, num_attention_heads=3, max_position_embeddings=128,
                                   original_max_position_embeddings=6, partial_rotary_factor=0.75,
                                   rope_parameters=dict(rope_type="longrope", rope_theta=700.0, short_factor=SHORT,
                                                        long_factor=LONG, **rope))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("rope", [{}, {"attention_factor": 0.8}, {"factor": 3.0}])
def test_longrope_tables_match_transformers_on_both_sides_of_the_original_length(backend, rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = _phi3_config(**rope)
    params = config.rope_parameters
    for positions in (np.array([[0, 1, 2, 3, 4, 5]]), np.array([[0, 3, 6, 1, 9, 2]])):  # max + 1 = 6, then 10
        seq_len = int(positions.max()) + 1
        inv_freq, scale = ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=seq_len)
        freqs = torch.from_numpy(positions).float()[..., None] * inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        with using(backend):
            cos, sin = longrope_cos_sin(ops().xp.asarray(positions), 12, 700.0, params, 128)
        np.testing.assert_allclose(np.asarray(cos), (emb.cos() * scale).numpy(), atol=1e-6)
        np.testing.assert_allclose(np.asarray(sin), (emb.sin() * scale).numpy(), atol=1e-6)
    # the two sides really differ (per-dimension factors), and the attention factor is not 1
    short, long = (ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=n)[0] for n in (6, 7))
    assert not torch.allclose(short, long) and scale != 1.0


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("rotary", [16, 8])  # all features, then the first half (partial rotary)
def test_interleaved_rope_matches_transformers_cohere(backend, rotary):
    from transformers.models.cohere.modeling_cohere import apply_rotary_pos_emb

    theta, head = 300.0, 16
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 3, head)).astype(np.float32)          # BTNH
    positions = np.array([[0, 1, 2, 3, 4], [9, 3, 1, 0, 7]])
    inv_freq, _ = rope_frequencies(rotary, theta)
    freqs = torch.from_numpy(positions).float()[..., None] * torch.from_numpy(inv_freq)
    emb = torch.repeat_interleave(freqs, 2, dim=-1)
    xt = torch.from_numpy(x).transpose(1, 2)
    turned, _ = apply_rotary_pos_emb(xt[..., :rotary], xt[..., :rotary], emb.cos(), emb.sin())
    ref = torch.cat([turned, xt[..., rotary:]], dim=-1).transpose(1, 2).numpy()
    with using(backend):
        xp = ops().xp
        cos, sin = rope_cos_sin(xp.asarray(positions), inv_freq, interleaved=True)
        ours = np.asarray(apply_rope(xp.asarray(x), cos, sin, interleaved=True))
        halves = np.asarray(apply_rope(xp.asarray(x), *rope_cos_sin(xp.asarray(positions), inv_freq)))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.abs(ours - halves).max() > 0.1  # pairs are not halves
