"""Attention inputs from a fused q/k/v projection, and attention through one layer's KV cache.

Fused projections keep the checkpoint's single tensor (`query_key_value`, `c_attn`) and are split
after the matmul. Every fused layout of BLOOM, Falcon and GPT-BigCode is one grouped layout: K
groups, each G = N / K query heads followed by one key and one value head, H features each:

- K = N (G = 1): per-head [q, k, v] interleaved (BLOOM, Falcon-RW, GPT-BigCode without multi-query)
- K = 1: all query heads, then the key, then the value (multi-query Falcon-7B, StarCoder)
- 1 < K < N: Falcon's `new_decoder_architecture` (Falcon-40B/180B) with `num_kv_heads` groups

    >>> import numpy as np
    >>> qkv = np.arange(10, dtype=np.float32).reshape(1, 1, 10)   # K = 1, N = 3, H = 2: [q0 q1 q2 k v]
    >>> q, k, v = split_qkv(qkv, num_kv_heads=1, head_dim=2)
    >>> q.shape, k[0, 0].tolist(), v[0, 0].tolist()
    ((1, 1, 3, 2), [[6.0, 7.0]], [[8.0, 9.0]])
"""
from __future__ import annotations

from zoohub.layers.attention import attention
from zoohub.layers.kv_cache import update_cache


def split_qkv(qkv, *, num_kv_heads: int, head_dim: int):
    """[B, T, K (G + 2) H] -> q [B, T, K G, H], k and v [B, T, K, H] (query head n sits in group n // G)."""
    b, t, width = qkv.shape
    grouped = qkv.reshape(b, t, num_kv_heads, width // (num_kv_heads * head_dim), head_dim)
    q = grouped[:, :, :, :-2].reshape(b, t, -1, head_dim)
    return q, grouped[:, :, :, -2], grouped[:, :, :, -1]


def cached_attention(q, k, v, *, kv=None, index=None, **kwargs):
    """`attention(q, k, v, **kwargs)`; with kv = (k_cache, v_cache) [B, S, K, H] the new keys and values
    are first written at slot `index` and attention runs over the cache. Returns (out [B, T, N, H], kv)."""
    if kv is not None:
        kv = (update_cache(kv[0], k, index), update_cache(kv[1], v, index))
        k, v = kv
    return attention(q, k, v, **kwargs), kv
