"""Scaled dot-product attention with padding, causal and sliding-window masks, GQA and soft-capping.

Masks are boolean, True where a query may attend a key, broadcastable to [B, 1, T, S].
A KV cache is just longer k/v with a mask built from positions, so decoding reuses this code.
"""
from __future__ import annotations

from zoohub.backend import ops

# A large finite negative rather than -inf so rows with no visible key give a uniform
# distribution instead of NaN (transformers uses dtype.min the same way).
_MASKED = -1e30


def attention(q, k, v, *, scale: float, mask=None, softcap: float | None = None, bias=None,
              sinks=None):
    """Multi-head / grouped-query attention.

    Args:
        q: [B, T, N, H] queries.  k, v: [B, S, K, H] with N % K == 0 (K < N is GQA, K = 1 is MQA).
        scale: multiplier of q.k (usually H ** -0.5).
        mask: bool [B or 1, 1, T, S]; True = may attend.
        softcap: Gemma 2's tanh soft-capping of the scores, `cap * tanh(scores / cap)`.
        bias: float32 [B or 1, N, T or 1, S] added to the scaled scores before masking (ALiBi).
        sinks: [N] per-head logits of a virtual key with no value (gpt-oss's attention sinks): each
            joins its head's softmax denominator, so a query may attend to nothing.
    Returns:
        [B, T, N, Hv] in q's dtype (Hv: v's width, which may differ from q's). Scores and softmax are
        computed in float32.
    """
    xp = ops().xp
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    groups = n // kv_heads
    # Batched matmuls rather than einsum: numpy's einsum does not call BLAS.
    qg = q.reshape(b, t, kv_heads, groups, h).transpose(0, 2, 3, 1, 4)          # BKGTH
    kt = k.transpose(0, 2, 3, 1)[:, :, None]                                     # BK1HS
    scores = xp.matmul(qg, kt).astype(xp.float32, copy=False) * scale           # BKGTS
    if softcap is not None:
        scores = xp.tanh(scores / softcap) * softcap
    if bias is not None:  # query head n = kv head n // G, group member n % G
        scores = scores + bias.reshape(bias.shape[0], kv_heads, groups, *bias.shape[2:])
    if mask is not None:
        scores = xp.where(mask[:, :, None], scores, _MASKED)  # [B,1,T,S] -> [B,1,1,T,S]
    top = scores.max(-1, keepdims=True)
    if sinks is not None:
        sink = sinks.astype(xp.float32).reshape(1, kv_heads, groups, 1, 1)      # head n = kv head * G + group
        top = xp.maximum(top, sink)
    weights = xp.exp(scores - top)
    total = weights.sum(-1, keepdims=True)
    if sinks is not None:
        total = total + xp.exp(sink - top)
    weights = (weights / total).astype(v.dtype, copy=False)
    out = xp.matmul(weights, v.transpose(0, 2, 1, 3)[:, :, None])                # BKGTH
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, v.shape[-1])


def padding_mask(attention_mask):
    """[B, S] of 1/0 (1 = real token) -> bool [B, 1, 1, S]."""
    return (attention_mask != 0)[:, None, None, :]


def causal_mask(query_positions, key_positions, *, window: int | None = None):
    """Key s visible from query t iff pos_k <= pos_q (and pos_q - pos_k < window when given).

    query_positions: [T] or [B, T]; key_positions: [S] or [B, S]. Returns bool [B|1, 1, T, S].
    """
    xp = ops().xp
    q = xp.asarray(query_positions)
    k = xp.asarray(key_positions)
    q = q[None] if q.ndim == 1 else q
    k = k[None] if k.ndim == 1 else k
    diff = q[:, :, None] - k[:, None, :]  # [B, T, S]
    allowed = diff >= 0
    if window is not None:
        allowed = allowed & (diff < window)
    return allowed[:, None]
