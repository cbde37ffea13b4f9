"""What the decoder-only families (GPT-2, Llama/Mistral/Qwen, Gemma) share: RoPE settings read from
both transformers 4.x (`rope_theta`, `rope_scaling`) and 5.x (`rope_parameters`) configs, per-layer
attention kinds (full or sliding window), masks built from positions, the KV cache, the causal-LM
head, and the layer stack.

Decoder layers are held stacked on a leading layer axis (`Family.layers`): on jax every call runs
them as one `lax.scan` (compiles ~3x faster than an unrolled stack), on numpy as a loop over views.

Inputs of a forward pass: `input_ids` [B, T], `attention_mask` [B, T] (1 = real token), optional
`position_ids` [B, T]. With `cache=` (generation) the keys are the cache's slots instead.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from zoohub.backbones.base import Check, Head, ModelConfig, TinyRecipe
from zoohub.backend import ops
from zoohub.layers import apply_rope, attention, causal_mask, linear, rope_cos_sin, rope_frequencies
from zoohub.layers.rope import longrope_cos_sin
from zoohub.layers.kv_cache import update_cache

ROPE_TYPES = ("default", "linear", "llama3", "longrope", "yarn")


def _rope_ok(value, partial: bool = False) -> bool:
    """rope_scaling / rope_parameters (flat, or Gemma 3's per-layer-type dict) use implemented types,
    rotating the whole head unless `partial` (a family that implements `partial_rotary_factor`)."""
    if value is None:
        return True
    if isinstance(value, Mapping) and all(isinstance(v, Mapping) or v is None for v in value.values()) and value:
        return all(_rope_ok(v, partial) for v in value.values())
    factor = value.get("partial_rotary_factor", 1.0)
    return (value.get("rope_type", value.get("type", "default")) in ROPE_TYPES
            and (factor == 1.0 or partial and _is_fraction(factor)))


def _is_fraction(value) -> bool:
    return isinstance(value, (int, float)) and 0 < value <= 1


def rope_checks(partial_rotary: bool = False) -> dict[str, Check]:
    """The RoPE keys' CHECKS; `partial_rotary=True` for a family whose `DecoderConfig.rotary_dim`
    reads `partial_rotary_factor` (its attention rotates only the first features of each head)."""
    if partial_rotary:
        ok, what = (lambda v: _rope_ok(v, True)), f"rope_type in {ROPE_TYPES}, partial_rotary_factor in (0, 1]"
        factor = (lambda v: v is None or _is_fraction(v), "in (0, 1]")
    else:
        ok, what = _rope_ok, f"rope_type in {ROPE_TYPES}, no partial_rotary_factor"
        factor = (lambda v: v in (None, 1, 1.0), "1.0 (rotary over the whole head)")
    return {"rope_scaling": (ok, what), "rope_parameters": (ok, what), "partial_rotary_factor": factor}


ROPE_CHECKS = rope_checks()


@dataclass(frozen=True, kw_only=True)
class DecoderConfig(ModelConfig):
    """Fields every RoPE decoder shares; field names are transformers' keys."""

    CHECKS = ROPE_CHECKS
    DEFAULT_ROPE_THETA: ClassVar[float] = 10000.0

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

    def rotary_dim(self, kind: str = "full_attention") -> int:
        """Leading features of each head that RoPE rotates: all of them (`rope_checks` refuses a
        `partial_rotary_factor`); a family that implements partial rotary overrides this."""
        return self.dim_per_head

    def partial_rotary_dim(self, kind: str, legacy: float | None, default: float) -> int:
        """`rotary_dim` for a family that implements partial rotary, in transformers' order: the rope
        dict's `partial_rotary_factor`, then the family's top-level 4.x key (`legacy`: Phi's and StableLM's
        `partial_rotary_factor`, NeoX's `rotary_pct`), then the family's default."""
        factor = (self.rope(kind)[1] or {}).get("partial_rotary_factor", legacy)
        return int(self.dim_per_head * (default if factor is None else factor))


class GPT2Names:
    """The names shared code reads (layers, heads, head width, positions) for configs that keep GPT-2's
    keys n_embd, n_head, n_layer, n_positions (GPT-2, GPT-J): a mixin before `ModelConfig`."""

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head

    @property
    def dim_per_head(self) -> int:
        return self.n_embd // self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions


# ---- the KV cache, positions and masks ------------------------------------------------------------

class KVCache(NamedTuple):
    """A static-shape cache of S slots per row (a pytree: it goes through jit, scan and while_loop).

    The forward pass writes its T new keys/values at slots [index, index + T); a slot is attended
    when it holds a real token (not padding) and has been written."""

    k: Any              # [L, B, S, K, H]
    v: Any              # [L, B, S, K, H]
    positions: Any      # [B, S] int32: the position of the token each slot holds (or will hold)
    real: Any           # [B, S] int32: 1 where that token is real, 0 for padding
    index: Any = 0      # write offset of this call (int, or a traced int32 on jax), or [B] offsets, one per row


def default_positions(mask):
    """Positions counted over real tokens only, so a left-padded row starts at 0 (as transformers'
    generate does); padding gets 1, like transformers' `masked_fill(mask == 0, 1)`."""
    xp = ops().xp
    pos = xp.cumsum(mask.astype(xp.int32), axis=1) - 1
    return xp.where(mask != 0, pos, 1)


def prepare(inputs: Mapping, cache: KVCache | None = None):
    """(ids, query positions, key positions [B, S], key validity bool [B, 1, 1, S]).

    Without a cache the keys are the inputs themselves; with one, the cache's slots."""
    xp = ops().xp
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = xp.ones(ids.shape, xp.int32)
    positions = inputs.get("position_ids")
    if positions is None:
        positions = default_positions(mask)
    if cache is None:
        return ids, positions, positions, (mask != 0)[:, None, None, :]
    slots = xp.arange(cache.real.shape[1])[None, :]
    index = cache.index[:, None] if getattr(cache.index, "ndim", 0) == 1 else cache.index  # per-row offsets
    written = slots < index + ids.shape[1]
    return ids, positions, cache.positions, ((cache.real != 0) & written)[:, None, None, :]


def masks_for(config: DecoderConfig, positions, key_positions, key_valid) -> dict:
    """{"full_attention": mask, "sliding_attention": mask} (the second only when some layer slides)."""
    out = {"full_attention": key_valid & causal_mask(positions, key_positions)}
    if "sliding_attention" in config.attention_kinds():
        out["sliding_attention"] = key_valid & causal_mask(positions, key_positions, window=config.sliding_window)
    return out


def rope_tables(config: DecoderConfig, positions, *, interleaved: bool = False) -> dict:
    """{layer kind: (cos, sin)} for the kinds present (`interleaved`: for RoPE over adjacent pairs)."""
    out = {}
    for kind in set(config.attention_kinds()):
        theta, scaling = config.rope(kind)
        if (scaling or {}).get("rope_type") == "longrope":  # the factor set depends on the positions
            out[kind] = longrope_cos_sin(positions, config.rotary_dim(kind), theta, scaling,
                                         config.max_position_embeddings, interleaved=interleaved)
            continue
        inv_freq, attention_scaling = rope_frequencies(config.rotary_dim(kind), theta, scaling)
        out[kind] = rope_cos_sin(positions, inv_freq, attention_scaling, interleaved=interleaved)
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
                   qk_norm: Callable | None = None, softcap: float | None = None, projections: tuple | None = None,
                   interleaved: bool = False, sinks=None):
    """q/k/v/o projections (torch names), optional per-head q/k norms, RoPE, GQA attention (with
    gpt-oss's per-head attention `sinks` [N] when given).

    kv: (k_cache, v_cache) [B, S, K, H] for this layer; the new keys are written at `index`.
    projections: (q [B, T, N*H], k, v [B, T, K*H]) already computed (a fused `qkv_proj`), else from
    `q_proj`/`k_proj`/`v_proj`. interleaved: RoPE over adjacent pairs (`rope_cos_sin(interleaved=)`).
    Returns (output [B, T, D], updated kv or None)."""
    b, t, _ = x.shape
    n, kh, h = config.num_attention_heads, config.kv_heads, config.dim_per_head
    if projections is None:
        projections = linear(p["q_proj"], x), linear(p["k_proj"], x), linear(p["v_proj"], x)
    q, k, v = (y.reshape(b, t, heads, h) for y, heads in zip(projections, (n, kh, kh)))
    if qk_norm is not None:
        q, k = qk_norm(p["q_norm"], q), qk_norm(p["k_norm"], k)
    cos, sin = rope
    q, k = apply_rope(q, cos, sin, interleaved=interleaved), apply_rope(k, cos, sin, interleaved=interleaved)
    if kv is not None:
        kv = (update_cache(kv[0], k, index), update_cache(kv[1], v, index))
        k, v = kv
    out = attention(q, k, v, scale=scale, mask=mask, softcap=softcap, sinks=sinks)
    return linear(p["o_proj"], out.reshape(b, t, n * h)), kv


# ---- the layer stack -----------------------------------------------------------------------------

Block = Callable[[Mapping, Any, Mapping, Any], tuple]
"""block(layer params, x, per-layer info, kv or None) -> (x, kv)."""


def layer_key(rng, index):
    """The dropout key of one layer (under `lax.scan` the layer index is traced; None stays None)."""
    if rng is None:
        return None
    import jax

    return jax.random.fold_in(rng, index)


def _take_layer(tree, i: int):
    return {k: _take_layer(v, i) for k, v in tree.items()} if isinstance(tree, Mapping) else tree[i]


def _first_leaf(tree):
    return _first_leaf(next(iter(tree.values()))) if isinstance(tree, Mapping) else tree


def run_layers(block: Block, layers: Mapping, x, *, per_layer: Mapping[str, np.ndarray] | None = None,
               cache: KVCache | None = None, collect: list | None = None):
    """Apply `block` for every layer of the stacked `layers` tree (leading axis L).

    per_layer: {name: numpy array [L]} of static per-layer facts (e.g. `is_sliding`); the block's
    info also gets `index`, the layer number. Returns (x, cache with the new keys/values).
    A block may return a third value (a per-layer pytree, e.g. MoE router logits): with `collect` (a
    list) those values, stacked on a leading layer axis, are appended to it."""
    count = _first_leaf(layers).shape[0]
    per_layer = {**(per_layer or {}), "index": np.arange(count, dtype=np.int32)}
    index = None if cache is None else cache.index
    if ops().name == "jax":
        from jax import lax

        def body(h, xs):
            params, info, kv = xs
            h, kv, *extra = block(params, h, {**info, "cache_index": index}, kv)
            return h, (kv, extra[0] if extra else None)

        x, (kv, extras) = lax.scan(body, x, (layers, per_layer, None if cache is None else (cache.k, cache.v)))
        if collect is not None:
            collect.append(extras)
        return x, (None if cache is None else cache._replace(k=kv[0], v=kv[1]))
    extras = []
    for i in range(count):
        info = {name: values[i] for name, values in per_layer.items()}
        kv = None if cache is None else (cache.k[i], cache.v[i])  # views: numpy writes in place
        x, _, *extra = block(_take_layer(layers, i), x, {**info, "cache_index": index}, kv)
        extras.append(extra[0] if extra else None)
    if collect is not None:
        collect.append(None if extras[0] is None else np.stack(extras))
    return x, cache


def is_sliding_array(config: DecoderConfig) -> np.ndarray:
    return np.array([k == "sliding_attention" for k in config.attention_kinds()])


# ---- what the decoder families declare alike -------------------------------------------------------

IGNORED = (r"(^|\.)position_ids$", r"(^|\.)rotary_emb\.inv_freq$")

# Megatron-style tensor parallelism over "model" for torch Linear weights [out, in]: projections that
# fan out (q/k/v, gate/up) split their output rows, those that fan in (o, down) their input columns,
# so each layer needs one all-reduce. Embedding tables split over the vocabulary; norms replicate.
SHARDING = (
    (r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.weight$", ("model", None)),
    (r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.bias$", ("model",)),
    (r"\.(o_proj|down_proj)\.weight$", (None, "model")),
    (r"\.(o_proj|down_proj)\.bias$", ()),
    (r"(^|\.)embed_tokens\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"norm\.(weight|bias)$", ()),
)

# The tiny checkpoint every Llama-shaped recipe starts from (GQA 3/1, non-default eps, large init).
TINY = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rms_norm_eps=3e-5,
            initializer_range=0.5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
TINY_WINDOW = 5  # shorter than the test prompts, so sliding-window masks matter


def tiny_recipe(config: str, seed: int, **changes) -> TinyRecipe:
    """A recipe from `TINY` with some keys changed (a value of None removes the key)."""
    kwargs = {k: v for k, v in {**TINY, **changes}.items() if v is not None}
    return TinyRecipe(config=config, kwargs=kwargs, seed=seed)


def lm_head(params, c: ModelConfig, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32 from `lm_head.weight` (the embeddings when tied)."""
    return linear(params["lm_head"], hidden).astype("float32")


def causal_lm_head(arch: str, apply=lm_head, width=None) -> Head:
    width = width or (lambda c: c.hidden_size)
    return Head(task="causal_lm", architecture=arch, apply=apply,
                shapes=lambda c, n: {"lm_head.weight": (c.vocab_size, width(c))}, tied=("lm_head.weight",))
