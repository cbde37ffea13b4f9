"""Sequence pooling: [B, T, D] hidden states + [B, T] mask -> [B, D]."""
from __future__ import annotations

from zoohub.backend import ops
from zoohub.errors import UnsupportedConfigError

POOLING_MODES = ("cls", "mean", "max", "last")


def pool(hidden, attention_mask, mode: str):
    """Pool over time. "mean"/"max" ignore padding; "last" takes the last real token (right padding)."""
    xp = ops().xp
    mask = attention_mask.astype(hidden.dtype)[..., None]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        return (hidden * mask).sum(1) / xp.maximum(mask.sum(1), 1e-9)
    if mode == "max":
        return xp.where(mask > 0, hidden, -1e9).max(1)
    if mode == "last":
        last = attention_mask.astype(xp.int32).sum(1) - 1
        return xp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    raise UnsupportedConfigError(f"pooling mode {mode!r} is not one of {POOLING_MODES}")
