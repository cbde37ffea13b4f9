"""What encoder-decoder families share: writing one decoder layer's keys/values into the stacked
self-attention cache, and transformers' `shift_right` of labels into decoder inputs.

    >>> import numpy as np
    >>> shift_right(np.array([[5, 6, -100]], np.int32), start_id=0, pad_id=0).tolist()
    [[0, 5, 6]]
"""
from __future__ import annotations

from zoohub.backend import ops
from zoohub.layers.kv_cache import update_cache


def write_layer(stack, new, layer: int, index):
    """stack [L, B, S, K, H] with new [B, T, K, H] written at (layer, slot `index`); returns (stack,
    that layer's [B, S, K, H]). numpy writes in place; jax does one `dynamic_update_slice` on the stack,
    which XLA keeps in place inside the decode loop."""
    if ops().name == "numpy":
        update_cache(stack[layer], new, index)  # a view: written in place
        return stack, stack[layer]
    from jax import lax

    xp = ops().xp
    zero = xp.zeros((), xp.int32)
    start = (xp.int32(layer), zero, xp.asarray(index, xp.int32), zero, zero)
    stack = lax.dynamic_update_slice(stack, new[None].astype(stack.dtype), start)
    return stack, stack[layer]


def shift_right(labels, *, start_id: int, pad_id: int):
    """Decoder inputs for teacher forcing: `start_id` then labels[:-1], with -100 (ignored) as `pad_id`."""
    xp = ops().xp
    shifted = xp.concatenate([xp.full((labels.shape[0], 1), start_id, labels.dtype), labels[:, :-1]], axis=1)
    return xp.where(shifted == -100, pad_id, shifted)
