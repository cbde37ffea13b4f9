"""A static-shape KV cache: write new keys/values at an offset without changing the array's shape.

On jax this is `lax.dynamic_update_slice` (the offset may be traced, so one compiled decode step
serves every position); on numpy it writes in place (the caller owns the buffer).
"""
from __future__ import annotations

from zoohub.backend import ops


def update_cache(cache, new, index):
    """cache [B, S, K, H] with new [B, T, K, H] written at time offset `index`; returns the cache."""
    o = ops()
    if o.name == "numpy":
        cache[:, int(index):int(index) + new.shape[1]] = new
        return cache
    from jax import lax

    zero = o.xp.zeros((), o.xp.int32)
    return lax.dynamic_update_slice(cache, new.astype(cache.dtype), (zero, o.xp.asarray(index, o.xp.int32), zero, zero))


def init_cache(num_layers: int, batch: int, length: int, num_kv_heads: int, head_dim: int, dtype) -> dict:
    """Zeros {"k", "v"}: [L, B, S, K, H] each."""
    xp = ops().xp
    shape = (num_layers, batch, length, num_kv_heads, head_dim)
    return {"k": xp.zeros(shape, dtype), "v": xp.zeros(shape, dtype)}
