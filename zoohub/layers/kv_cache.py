"""A static-shape KV cache: write new keys/values at an offset without changing the array's shape.

On jax this is `lax.dynamic_update_slice` (the offset may be traced, so one compiled decode step
serves every position); on numpy it writes in place (the caller owns the buffer).
"""
from __future__ import annotations

from zoohub.backend import ops


def update_cache(cache, new, index):
    """cache [B, S, K, H] with new [B, T, K, H] written at time offset `index`; returns the cache.

    `index` is one offset for every row, or [B] offsets, one per row (the serving engine's rows
    hold sequences of different lengths)."""
    o = ops()
    per_row = getattr(index, "ndim", 0) == 1
    if o.name == "numpy":
        t = new.shape[1]
        for row, start in (enumerate(index) if per_row else [(slice(None), index)]):
            cache[row, int(start):int(start) + t] = new[row]
        return cache
    from jax import lax

    zero = o.xp.zeros((), o.xp.int32)
    if per_row:
        import jax

        write = lambda c, n, i: lax.dynamic_update_slice(c, n.astype(c.dtype), (i, zero, zero))  # noqa: E731
        return jax.vmap(write)(cache, new, o.xp.asarray(index, o.xp.int32))
    return lax.dynamic_update_slice(cache, new.astype(cache.dtype), (zero, o.xp.asarray(index, o.xp.int32), zero, zero))


def init_cache(num_layers: int, batch: int, length: int, num_kv_heads: int, head_dim: int, dtype) -> dict:
    """Zeros {"k", "v"}: [L, B, S, K, H] each."""
    xp = ops().xp
    shape = (num_layers, batch, length, num_kv_heads, head_dim)
    return {"k": xp.zeros(shape, dtype), "v": xp.zeros(shape, dtype)}
