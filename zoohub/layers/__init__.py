"""The shared layer core: pure functions of (params, inputs) on the selected backend.

Axis legend for shapes and einsums: B batch, T time (query), S source (key), D model width,
N heads, K kv heads, H head dim, F MLP width, V vocabulary.
"""
from zoohub.layers.core import (
    ACTIVATIONS, KeyStream, activation, dense_mlp, dropout, embedding, gated_mlp, get_path, layer_norm,
    linear, rms_norm,
)
from zoohub.layers.attention import attention, causal_mask, padding_mask
from zoohub.layers.alibi import alibi_bias, alibi_slopes
from zoohub.layers.rope import apply_rope, rope_cos_sin, rope_frequencies
from zoohub.layers.pooling import pool

__all__ = [
    "ACTIVATIONS", "KeyStream", "dropout", "get_path", "activation", "dense_mlp", "embedding", "gated_mlp", "layer_norm", "linear",
    "rms_norm", "attention", "causal_mask", "padding_mask", "alibi_bias", "alibi_slopes",
    "apply_rope", "rope_cos_sin", "rope_frequencies", "pool",
]
