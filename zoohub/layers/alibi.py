"""ALiBi (attention with linear biases, Press et al. 2021): no position embeddings; each head adds
`slope * key_position` to its attention scores, one geometric slope per head.

The bias grows with the key's position rather than shrinking with the query-key distance; for a
given query the two differ by a constant (`slope * query_position`), which softmax cancels. That
is how BLOOM and Falcon compute it, and it needs only the keys' positions, so it composes with a KV
cache (the cache keeps each slot's position) and with left padding (positions count real tokens, as
transformers' `(attention_mask.cumsum(-1) - 1) * attention_mask` does).

    >>> import numpy as np
    >>> alibi_slopes(4).tolist()
    [0.25, 0.0625, 0.015625, 0.00390625]
    >>> alibi_bias(alibi_slopes(2), np.array([[0, 1, 2]])).shape   # [B, N, 1, S], broadcast over queries
    (1, 2, 1, 3)
"""
from __future__ import annotations

import math

import numpy as np

from zoohub.backend import ops


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head slopes [N] in float32, as transformers computes them: for the largest power of two
    P <= N, 2^(-8/P) to the powers 1..P; the other N - P heads take every other slope of the
    2P-head sequence (powers 1, 3, 5, ...)."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
    slopes = base ** np.arange(1, 1 + closest, dtype=np.float32)
    if closest != num_heads:
        extra_base = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
        remaining = min(closest, num_heads - closest)
        slopes = np.concatenate([slopes, extra_base ** np.arange(1, 1 + 2 * remaining, 2, dtype=np.float32)])
    return slopes.astype(np.float32)


def alibi_bias(slopes: np.ndarray, key_positions, *, scale: float = 1.0, bfloat16_product: bool = False):
    """The scores' bias [B, N, 1, S] in float32 for key positions [B, S] (or [S]).

    scale: multiplies the bias (Falcon divides it by sqrt(head_dim), BLOOM does not).
    bfloat16_product: compute `slope * position` in bfloat16 (both rounded to it, then the product),
        as transformers' Falcon does (`slopes.bfloat16() * positions`) whatever the model's dtype;
        that rounding moves the bias by far more than 1e-4, so matching it is not optional.
    """
    xp = ops().xp
    positions = xp.asarray(key_positions)
    positions = (positions[None] if positions.ndim == 1 else positions).astype(xp.float32)
    s = xp.asarray(slopes, xp.float32)
    if bfloat16_product:
        positions, s = round_to_bfloat16(positions), round_to_bfloat16(s)
    bias = s[None, :, None, None] * positions[:, None, None, :]
    if bfloat16_product:
        bias = round_to_bfloat16(bias)
    return bias * scale if scale != 1.0 else bias


def round_to_bfloat16(x):
    """Finite float32 values rounded to the nearest bfloat16 (ties to even), still in float32.

    Done on the bits: XLA may drop a float32 -> bfloat16 -> float32 round trip as "excess precision"
    (it did here on CPU), and then Falcon's bias would be off by up to 2^-9 of its size."""
    xp = ops().xp
    bits = x.astype(xp.float32).view(xp.uint32)
    bits = (bits + xp.uint32(0x7FFF) + ((bits >> 16) & xp.uint32(1))) & xp.uint32(0xFFFF0000)
    return bits.view(xp.float32)
