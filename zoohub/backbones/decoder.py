"""What the decoder-only families (GPT-2, Llama/Mistral/Qwen, Gemma) share: RoPE settings read from
both transformers 4.x (`rope_theta`, `rope_scaling`) and 5.x (`rope_parameters`) configs, per-layer
attention kinds (full or sliding window), masks built from positions, the KV cache, and running the
layer stack either as a Python loop over the checkpoint's `layers.{i}` dicts or, for compiled
generation on jax, as one `lax.scan` over layers stacked on a leading axis (compiles ~3x faster).

Inputs of a forward pass: `input_ids` [B, T], `attention_mask` [B, T] (1 = real token), optional
`position_ids` [B, T]. With a cache (generation) also `cache_index` (write offset), `cache_positions`
[B, S] and `cache_mask` [B, S] (1 = slot holds a real token once this step has written).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from zoohub.backbones.base import ModelConfig
from zoohub.backend import ops
from zoohub.layers import apply_rope, attention, causal_mask, linear, rope_cos_sin, rope_frequencies
from zoohub.layers.kv_cache import update_cache

ROPE_TYPES = ("default", "linear", "llama3")


def _rope_ok(value) -> bool:
    """rope_scaling / rope_parameters (flat, or Gemma 3's per-layer-type dict) use implemented types."""
    if value is None:
        return True
    if isinstance(value, Mapping) and all(isinstance(v, Mapping) or v is None for v in value.values()) and value:
        return all(_rope_ok(v) for v in value.values())
    return value.get("rope_type", value.get("type", "default")) in ROPE_TYPES


ROPE_CHECKS = {
    "rope_scaling": (_rope_ok, f"rope_type in {ROPE_TYPES}"),
    "rope_parameters": (_rope_ok, f"rope_type in {ROPE_TYPES}"),
}


@dataclass(frozen=True, kw_only=True)
class DecoderConfig(ModelConfig):
    """Fields every RoPE decoder shares; field names are transformers' keys."""

    DEFAULT_ROPE_THETA: ClassVar[float] = 10000.0
    # Fields written back only when set: transformers fills them from other fields.
    DROP_IF_NONE: ClassVar[tuple[str, ...]] = ("head_dim", "num_key_value_heads", "rope_theta", "rope_scaling",
                                               "rope_parameters", "layer_types", "max_window_layers")

    vocab_size: int                          # V
    hidden_size: int                         # D
    intermediate_size: int                   # F
    num_hidden_layers: int                   # L
    num_attention_heads: int                 # N
    num_key_value_heads: int | None = None   # K (None: N)
    head_dim: int | None = None              # H (None: D / N)
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float | None = None          # transformers 4.x form
    rope_scaling: dict | None = None         # transformers 4.x form
    rope_parameters: dict | None = None      # transformers 5.x form
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    layer_types: list | None = None          # "full_attention" | "sliding_attention" per layer
    sliding_window: int | None = None

    def __post_init__(self):
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(f"{self.num_attention_heads} heads are not divisible into {self.kv_heads} kv heads")
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def attention_kinds(self) -> list[str]:
        """Per layer: "full_attention" or "sliding_attention" (the families override the default rule)."""
        if self.layer_types is not None:
            return list(self.layer_types)
        kind = "sliding_attention" if self.sliding_window else "full_attention"
        return [kind] * self.num_hidden_layers

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        """(theta, scaling dict or None) for a layer kind, from either config form."""
        params = self.rope_parameters
        if params and isinstance(params.get(kind), Mapping):
            params = params[kind]
        if params:
            theta = params.get("rope_theta", self.rope_theta or self.DEFAULT_ROPE_THETA)
            return float(theta), dict(params)
        return float(self.rope_theta or self.DEFAULT_ROPE_THETA), self.rope_scaling

    def to_hf(self) -> dict:
        out = super().to_hf()
        for key in self.DROP_IF_NONE:
            if out.get(key, 0) is None:
                del out[key]
        return out


# ---- inputs, positions and masks -----------------------------------------------------------------

def default_positions(mask):
    """Positions counted over real tokens only, so a left-padded row starts at 0 (as transformers'
    generate does); padding gets 1, like transformers' `masked_fill(mask == 0, 1)`."""
    xp = ops().xp
    pos = xp.cumsum(mask.astype(xp.int32), axis=1) - 1
    return xp.where(mask != 0, pos, 1)


def prepare(inputs: Mapping):
    """(ids, positions, masks) where masks maps a window (None = full causal) to bool [B, 1, T, S]."""
    xp = ops().xp
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = xp.ones(ids.shape, xp.int32)
    positions = inputs.get("position_ids")
    if positions is None:
        positions = default_positions(mask)
    if "cache_positions" in inputs:
        key_positions, key_valid = inputs["cache_positions"], inputs["cache_mask"]
    else:
        key_positions, key_valid = positions, mask
    return ids, positions, key_positions, (key_valid != 0)[:, None, None, :]


def masks_for(config: DecoderConfig, positions, key_positions, key_valid) -> dict:
    """{"full_attention": mask, "sliding_attention": mask} (the second only when some layer slides)."""
    out = {"full_attention": key_valid & causal_mask(positions, key_positions)}
    if "sliding_attention" in config.attention_kinds():
        out["sliding_attention"] = key_valid & causal_mask(positions, key_positions, window=config.sliding_window)
    return out


def rope_tables(config: DecoderConfig, positions) -> dict:
    """{layer kind: (cos, sin)} for the kinds present."""
    out = {}
    for kind in set(config.attention_kinds()):
        theta, scaling = config.rope(kind)
        inv_freq, attention_scaling = rope_frequencies(config.dim_per_head, theta, scaling)
        out[kind] = rope_cos_sin(positions, inv_freq, attention_scaling)
    return out


def select(is_sliding, table: dict):
    """table["sliding_attention"] if is_sliding else table["full_attention"]; under `lax.scan` the
    flag is traced, so both are computed and one is picked with `where`."""
    if len(table) == 1:
        return next(iter(table.values()))
    if isinstance(is_sliding, (bool, np.bool_)):
        return table["sliding_attention" if is_sliding else "full_attention"]
    xp = ops().xp
    pick = lambda a, b: xp.where(is_sliding, a, b)  # noqa: E731
    a, b = table["sliding_attention"], table["full_attention"]
    return tuple(map(pick, a, b)) if isinstance(a, tuple) else pick(a, b)


# ---- attention with an optional KV cache -------------------------------------------------------

def self_attention(p: Mapping, x, *, config: DecoderConfig, rope, mask, scale: float, kv=None, index=None,
                   qk_norm: Callable | None = None, softcap: float | None = None):
    """q/k/v/o projections (torch names), optional per-head q/k norms, RoPE, GQA attention.

    kv: (k_cache, v_cache) [B, S, K, H] for this layer; the new keys are written at `index`.
    Returns (output [B, T, D], updated kv or None)."""
    b, t, _ = x.shape
    n, kh, h = config.num_attention_heads, config.kv_heads, config.dim_per_head
    q = linear(p["q_proj"], x).reshape(b, t, n, h)
    k = linear(p["k_proj"], x).reshape(b, t, kh, h)
    v = linear(p["v_proj"], x).reshape(b, t, kh, h)
    if qk_norm is not None:
        q, k = qk_norm(p["q_norm"], q), qk_norm(p["k_norm"], k)
    cos, sin = rope
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if kv is not None:
        kv = (update_cache(kv[0], k, index), update_cache(kv[1], v, index))
        k, v = kv
    out = attention(q, k, v, scale=scale, mask=mask, softcap=softcap)
    return linear(p["o_proj"], out.reshape(b, t, n * h)), kv


# ---- the layer stack -----------------------------------------------------------------------------

def stack_layers(layers: Mapping) -> dict:
    """{"0": tree, "1": tree, ...} -> one tree with a leading layer axis (for `lax.scan`)."""
    import jax

    trees = [layers[str(i)] for i in range(len(layers))]
    return jax.tree_util.tree_map(lambda *xs: ops().xp.stack(xs), *trees)


def run_layers(block: Callable, layers, x, *, per_layer: dict, cache: dict | None = None, stacked: bool = False):
    """Apply `block(layer_params, x, info, kv) -> (x, kv)` for every layer.

    per_layer: {name: numpy array [L]} of static per-layer facts (e.g. `is_sliding`).
    stacked: `layers` is one tree with a leading L axis (from `stack_layers`); runs `lax.scan`.
    Returns (x, cache)."""
    if stacked:
        from jax import lax

        def body(h, xs):
            lp, info, kv = xs
            h, kv = block(lp, h, info, kv)
            return h, kv

        kvs = (cache["k"], cache["v"]) if cache is not None else None
        x, new = lax.scan(body, x, (layers, per_layer, kvs))
        return x, (None if cache is None else {"k": new[0], "v": new[1]})
    new_k, new_v = [], []
    for i in range(len(next(iter(per_layer.values())))):
        info = {name: values[i] for name, values in per_layer.items()}
        kv = (cache["k"][i], cache["v"][i]) if cache is not None else None
        x, kv = block(layers[str(i)], x, info, kv)
        if kv is not None:
            new_k.append(kv[0])
            new_v.append(kv[1])
    if cache is None:
        return x, None
    if ops().name == "numpy":  # written in place through the views
        return x, cache
    xp = ops().xp
    return x, {"k": xp.stack(new_k), "v": xp.stack(new_v)}


def is_sliding_array(config: DecoderConfig) -> np.ndarray:
    return np.array([k == "sliding_attention" for k in config.attention_kinds()])


def config_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
