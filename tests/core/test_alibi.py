"""ALiBi in the layer core against transformers' BLOOM and Falcon functions: slopes for power-of-two
and other head counts, the bias of left-padded batches, and attention with the bias run whole or
token by token through a KV cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zoohub.backend import using
from zoohub.layers import alibi_bias, alibi_slopes, attention, causal_mask

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.bloom import modeling_bloom  # noqa: E402
from transformers.models.falcon import modeling_falcon  # noqa: E402

HEADS = [1, 2, 3, 5, 6, 8, 12, 16, 71]


@pytest.mark.parametrize("heads", HEADS)
def test_slopes_match_transformers(heads):
    ref = modeling_bloom._get_alibi_slopes(heads, torch.device("cpu")).numpy()
    # float32 powers: torch's pow and numpy's may differ in the last bit (71 heads: powers up to 64)
    np.testing.assert_allclose(alibi_slopes(heads), ref, rtol=2.5e-7, atol=0)
    assert alibi_slopes(heads).dtype == np.float32


def _left_padded_mask():
    mask = np.zeros((3, 300), np.int64)   # long rows: the bfloat16 rounding of Falcon shows past 256
    mask[0, :] = 1
    mask[1, 290:] = 1
    mask[2, 100:] = 1
    return mask


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("heads", [3, 6, 16])
def test_bias_of_a_left_padded_batch_matches_bloom_and_falcon(backend, heads):
    mask = _left_padded_mask()
    positions = (np.cumsum(mask, 1) - 1) * mask   # transformers' ALiBi positions
    falcon_bias = lambda p: alibi_bias(alibi_slopes(heads), p, scale=1 / math.sqrt(16), bfloat16_product=True)  # noqa: E731
    with using(backend):
        if backend == "jax":  # compiled, as in a model: XLA must not drop the bfloat16 rounding
            import jax

            falcon_bias = jax.jit(falcon_bias)
        bloom = np.asarray(alibi_bias(alibi_slopes(heads), positions))
        falcon = np.asarray(falcon_bias(positions))
    ref = modeling_bloom.build_alibi_tensor(torch.tensor(mask), heads, torch.float32).numpy()
    assert bloom.shape == (3, heads, 1, 300)
    np.testing.assert_allclose(bloom.reshape(ref.shape), ref, rtol=1e-6, atol=0)
    ref = modeling_falcon.build_alibi_tensor(torch.tensor(mask), heads, torch.float32).numpy() / math.sqrt(16)
    np.testing.assert_allclose(falcon.reshape(ref.shape), ref, rtol=1e-6, atol=0)
    # Falcon's bfloat16 product is not the float32 one: a test that ignored it would pass either way
    assert np.abs(falcon - bloom / math.sqrt(16)).max() > 1e-3


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_attention_with_bias_matches_reference_and_a_token_by_token_cache(backend):
    """GQA 6/2 heads, left padding: the biased attention equals a float64 reference, and decoding the
    last tokens one at a time against the earlier keys gives the same rows."""
    rng = np.random.default_rng(0)
    b, t, n, kv, h = 2, 7, 6, 2, 4
    q = rng.normal(size=(b, t, n, h)).astype(np.float32)
    k = rng.normal(size=(b, t, kv, h)).astype(np.float32)
    v = rng.normal(size=(b, t, kv, h)).astype(np.float32)
    mask = np.ones((b, t), np.int64)
    mask[1, :3] = 0
    pos = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)
    slopes = alibi_slopes(n)
    with using(backend):
        visible = (mask != 0)[:, None, None, :] & np.asarray(causal_mask(pos, pos))
        full = np.asarray(attention(q, k, v, scale=h ** -0.5, mask=visible, bias=alibi_bias(slopes, pos)))
        steps = [np.asarray(attention(q[:, i:i + 1], k, v, scale=h ** -0.5, mask=visible[:, :, i:i + 1],
                                      bias=alibi_bias(slopes, pos))) for i in range(4, t)]
    kk, vv = np.repeat(k, n // kv, 2).astype(np.float64), np.repeat(v, n // kv, 2).astype(np.float64)
    scores = np.einsum("btnh,bsnh->bnts", q.astype(np.float64), kk) * h ** -0.5
    scores = scores + slopes[None, :, None, None] * pos[:, None, None, :]
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    ref = np.einsum("bnts,bsnh->btnh", weights / weights.sum(-1, keepdims=True), vv)
    real = mask == 1
    np.testing.assert_allclose(full[real], ref[real], atol=1e-5)
    np.testing.assert_allclose(np.concatenate(steps, 1), full[:, 4:], atol=1e-6)
    unbiased = np.asarray(attention(q, k, v, scale=h ** -0.5, mask=visible))
    assert np.abs(unbiased - full)[real].max() > 1e-2   # the bias is not a no-op on these inputs
