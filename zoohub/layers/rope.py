"""Rotary position embeddings in transformers' `rotate_half` convention (halves), or with
`interleaved=True` over adjacent pairs (Cohere's), and the LongRoPE (`longrope`, Phi-3) tables."""
from __future__ import annotations

import math

import numpy as np

from zoohub.backend import ops
from zoohub.errors import UnsupportedConfigError


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> tuple[np.ndarray, float]:
    """Inverse frequencies [H/2] (float32, as transformers computes them) and the attention scaling.

    scaling: transformers' rope dict (`rope_type` default | linear | llama3 | yarn and their keys).
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
    if kind == "yarn":
        return _yarn(head_dim, theta, scaling)
    raise UnsupportedConfigError(
        f"rope_type {kind!r} is not implemented; supported: default, linear, llama3, yarn"
    )


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction `0.1 * mscale * ln(factor) + 1` (1 when not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn(head_dim: int, theta: float, scaling: dict):
    """YaRN (arXiv 2309.00071) as transformers' `_compute_yarn_parameters`: frequencies that turn
    fewer than `beta_slow` times over the original length are divided by `factor`, those turning more
    than `beta_fast` times are kept, a linear ramp blends the ones between; cos/sin are scaled by
    `attention_factor` (default from `factor`, or mscale / mscale_all_dim when both are given)."""
    original = float(scaling["original_max_position_embeddings"])
    factor = float(scaling["factor"])  # transformers 5 refuses a yarn config without one
    attention = scaling.get("attention_factor")
    if attention is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim) if mscale and mscale_all_dim
                     else yarn_mscale(factor))
    fast, slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations):  # the feature index whose frequency turns `rotations` times over `original`
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(fast), correction_dim(slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    high = high + 0.001 if low == high else high  # transformers' guard against a zero-width ramp
    powers = (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim)).astype(np.float32)
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    keep = (1 - ramp).astype(np.float32)  # 1: extrapolate (keep the frequency), 0: interpolate (divide it)
    inv_freq = (1.0 / (np.float32(factor) * powers)) * (1 - keep) + (1.0 / powers) * keep
    return inv_freq.astype(np.float32), float(attention)


def rope_cos_sin(positions, inv_freq, attention_scaling: float = 1.0, *, interleaved: bool = False):
    """cos, sin of shape [B, T, H] for integer positions [B, T]; `interleaved` repeats each frequency
    for a pair of adjacent features (f0 f0 f1 f1 ...) instead of for the two halves (f0 f1 ... f0 f1 ...)."""
    xp = ops().xp
    freqs = positions.astype(xp.float32)[..., None] * xp.asarray(inv_freq)[None, None, :]
    emb = xp.repeat(freqs, 2, axis=-1) if interleaved else xp.concatenate([freqs, freqs], axis=-1)
    return xp.cos(emb) * attention_scaling, xp.sin(emb) * attention_scaling


def apply_rope(x, cos, sin, *, interleaved: bool = False):
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
        turned = apply_rope(x[..., :rotary], cos, sin, interleaved=interleaved)
        return xp.concatenate([turned, x[..., rotary:]], axis=-1)
    if interleaved:  # pairs (x0, x1), (x2, x3) ... turn: (-x1, x0), (-x3, x2) ...
        pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
        rotated = xp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        rotated = xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    c = cos[:, :, None, :].astype(x.dtype)
    s = sin[:, :, None, :].astype(x.dtype)
    return x * c + rotated * s


def longrope_cos_sin(positions, head_dim: int, theta: float, scaling: dict, max_position_embeddings: int, *,
                     interleaved: bool = False):
    """cos, sin [B, T, R] with LongRoPE (`rope_type` "longrope", Phi-3's older "su"): per-frequency
    rescaling by `short_factor`, or by `long_factor` once the call reaches past the original training
    length, and cos/sin scaled by the attention factor.

    As transformers does, one factor set serves the whole call: the long one when the largest position
    in `positions` + 1 exceeds `original_max_position_embeddings` (a traced choice on jax). The attention
    factor defaults to sqrt(1 + ln(factor) / ln(original length)), factor to max / original length.

    >>> import numpy as np
    >>> rope = dict(short_factor=[1.0, 1.0], long_factor=[2.0, 4.0], original_max_position_embeddings=4)
    >>> short = longrope_cos_sin(np.array([[0, 1, 2]]), 4, 100.0, rope, 16)[1]
    >>> long = longrope_cos_sin(np.array([[0, 1, 4]]), 4, 100.0, rope, 16)[1]  # position 4 >= 4: long factors
    >>> bool(np.allclose(short[0, 1] / 2 ** 0.5, np.sin([1.0, 0.1, 1.0, 0.1])))   # sqrt(1 + ln 4 / ln 4)
    True
    >>> bool(np.allclose(long[0, 1] / 2 ** 0.5, np.sin([0.5, 0.025, 0.5, 0.025])))
    True
    """
    xp = ops().xp
    original = scaling.get("original_max_position_embeddings") or max_position_embeddings
    factor = scaling.get("factor")
    factor = max_position_embeddings / original if factor is None else float(factor)
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    base = (theta ** exponent).astype(np.float32)
    short, long = (1.0 / (np.asarray(scaling[k], np.float32) * base) for k in ("short_factor", "long_factor"))
    inv_freq = xp.where(xp.max(positions) + 1 > original, xp.asarray(long, xp.float32), xp.asarray(short, xp.float32))
    return rope_cos_sin(positions, inv_freq, float(attention), interleaved=interleaved)
