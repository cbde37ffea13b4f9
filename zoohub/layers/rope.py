"""Rotary position embeddings in transformers' `rotate_half` convention (halves, not pairs)."""
from __future__ import annotations

import math

import numpy as np

from zoohub.backend import ops
from zoohub.errors import UnsupportedConfigError


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> tuple[np.ndarray, float]:
    """Inverse frequencies [H/2] (float32, as transformers computes them) and the attention scaling.

    scaling: transformers' rope dict (`rope_type` default | linear | llama3 and their keys).
    """
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    inv_freq = inv_freq.astype(np.float32)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return (inv_freq / float(scaling["factor"])).astype(np.float32), 1.0
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return np.where(medium, smoothed, scaled).astype(np.float32), 1.0
    raise UnsupportedConfigError(
        f"rope_type {kind!r} is not implemented; supported: default, linear, llama3"
    )


def rope_cos_sin(positions, inv_freq, attention_scaling: float = 1.0):
    """cos, sin of shape [B, T, H] for integer positions [B, T]."""
    xp = ops().xp
    freqs = positions.astype(xp.float32)[..., None] * xp.asarray(inv_freq)[None, None, :]
    emb = xp.concatenate([freqs, freqs], axis=-1)
    return xp.cos(emb) * attention_scaling, xp.sin(emb) * attention_scaling


def apply_rope(x, cos, sin):
    """Rotate x [B, T, N, H] by cos/sin [B, T, R]: the first R features of each head (R = H, or fewer
    for partial rotary, e.g. Phi's `partial_rotary_factor`); the other H - R pass through unchanged.

    >>> import numpy as np
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8)
    >>> cos, sin = rope_cos_sin(np.array([[3]]), rope_frequencies(4, 10000.0)[0])   # R = 4 of H = 8
    >>> apply_rope(x, cos, sin)[..., 4:].tolist()   # the last 4 features are left as they were
    [[[[4.0, 5.0, 6.0, 7.0]]]]
    """
    xp = ops().xp
    rotary = cos.shape[-1]
    if rotary < x.shape[-1]:  # rotate the leading R features as a head of width R (transformers' split)
        return xp.concatenate([apply_rope(x[..., :rotary], cos, sin), x[..., rotary:]], axis=-1)
    half = x.shape[-1] // 2
    rotated = xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    c = cos[:, :, None, :].astype(x.dtype)
    s = sin[:, :, None, :].astype(x.dtype)
    return x * c + rotated * s
