"""The serving engine's two programs over its slot cache, per backend: decode one token for the first
`batch` rows attending the first `window` slots, and prefill one chunk of one row. On jax they are
jitted once per model structure and compiled per bucket; on numpy they run eagerly on views."""
from __future__ import annotations

import numpy as np

from zoohub.backbones.decoder import KVCache
from zoohub.backend import ops
from zoohub.tasks.generation import model_step


def _row_cache(k, v, length: int, index, batch: int) -> KVCache:
    """A KVCache over `k`/`v` whose slots hold positions 0, 1, ... (every written slot is real)."""
    xp = ops().xp
    positions = xp.broadcast_to(xp.arange(length, dtype=xp.int32)[None, :], (batch, length))
    return KVCache(k=k, v=v, positions=positions, real=xp.ones((batch, length), xp.int32), index=index)


_PROGRAMS: dict[str, tuple] = {}
"""(decode, prefill) per model structure: presets of one architecture and config (fine-tunes of one
base) share the jitted programs, so serving several compiles each bucket once."""


def _structure(lm):
    """What the programs close over: family, config and head, not the task (whose params they take
    as an argument, so a shared program never holds one preset's weights alive)."""
    from types import SimpleNamespace

    return SimpleNamespace(family=lm.family, config=lm.config, head=lm.head)


def jax_programs(lm):
    """(decode, prefill) jitted for this task's structure (compiled per bucket)."""
    key = f"{lm.family.model_type}|{lm.architecture}|{lm.config!r}"
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _jit_programs(_structure(lm))
    return _PROGRAMS[key]


def _jit_programs(lm):
    from functools import partial

    import jax
    import jax.numpy as jnp
    from jax import lax

    @partial(jax.jit, static_argnames=("batch", "window"), donate_argnums=(1, 2))
    def decode(params, k, v, tokens, lengths, *, batch: int, window: int):
        cache = _row_cache(k[:, :batch, :window], v[:, :batch, :window], window, lengths, batch)
        logits, cache = model_step(lm, params, tokens=tokens[:, None], positions=lengths[:, None], cache=cache)
        k = lax.dynamic_update_slice(k, cache.k, (0, 0, 0, 0, 0))
        v = lax.dynamic_update_slice(v, cache.v, (0, 0, 0, 0, 0))
        return k, v, logits, jnp.argmax(logits, axis=-1).astype(jnp.int32)

    @partial(jax.jit, static_argnames=("chunk",), donate_argnums=(1, 2))
    def prefill(params, k, v, row, tokens, start, count, *, chunk: int):
        length = k.shape[2]
        cache = _row_cache(lax.dynamic_slice_in_dim(k, row, 1, axis=1), lax.dynamic_slice_in_dim(v, row, 1, axis=1),
                           length, start, 1)
        # Padding past the prompt repeats its last position: a learned position table has no row past
        # the context, and those slots are overwritten before anything attends them.
        positions = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), start + count - 1)[None, :]
        logits, cache = model_step(lm, params, tokens=tokens, positions=positions, cache=cache,
                                   last=jnp.reshape(count - 1, (1,)))
        k = lax.dynamic_update_slice_in_dim(k, cache.k, row, axis=1)
        v = lax.dynamic_update_slice_in_dim(v, cache.v, row, axis=1)
        return k, v, logits[0]

    return decode, prefill


def numpy_programs(lm):
    """(decode, prefill) on numpy: views of the cache, written in place by `update_cache`."""

    def decode(params, k, v, tokens, lengths, *, batch: int, window: int):
        cache = _row_cache(k[:, :batch, :window], v[:, :batch, :window], window, lengths, batch)
        logits, _ = model_step(lm, params, tokens=tokens[:, None], positions=lengths[:, None], cache=cache)
        return k, v, logits, np.argmax(logits, axis=-1).astype(np.int32)

    def prefill(params, k, v, row, tokens, start, count, *, chunk: int):
        row = int(row)
        cache = _row_cache(k[:, row:row + 1], v[:, row:row + 1], k.shape[2], int(start), 1)
        positions = np.minimum(int(start) + np.arange(chunk, dtype=np.int32), int(start) + int(count) - 1)[None, :]
        logits, _ = model_step(lm, params, tokens=tokens, positions=positions, cache=cache,
                               last=np.asarray([int(count) - 1]))
        return k, v, logits[0]

    return decode, prefill
