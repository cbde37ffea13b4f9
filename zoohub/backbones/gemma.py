"""Gemma, Gemma 2 and Gemma 3 (text): Llama-shaped decoders with Gemma's own details.

- All: embeddings scaled by sqrt(D) (in the weights' dtype), RMSNorm with `(1 + weight)` computed in
  float32, GeGLU MLP with the tanh GELU, tied embeddings.
- Gemma 2: attention scale `query_pre_attn_scalar ** -0.5`, tanh soft-capping of attention scores
  and final logits, pre/post norms around both attention and MLP, alternating sliding-window
  (even layers) and global layers.
- Gemma 3: Gemma 2's layout plus per-head q/k norms, one global layer in six by default, and a
  separate RoPE base for local layers (`rope_local_base_freq`, or `rope_parameters` per layer kind).

    >>> from zoohub.backbones import get_family
    >>> config = get_family("gemma3_text").config_class.from_hf({"vocab_size": 97, "hidden_size": 48,
    ...     "intermediate_size": 80, "num_hidden_layers": 6, "num_attention_heads": 3, "rope_local_base_freq": 10.0})
    >>> config.attention_kinds()[-2:], config.rope("sliding_attention")
    (['sliding_attention', 'full_attention'], (10.0, None))
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, DecoderConfig, KVCache, causal_lm_head, is_sliding_array, layer_key, lm_head,
    masks_for, prepare, rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, rms_norm


@dataclass(frozen=True, kw_only=True)
class GemmaConfig(DecoderConfig):
    """Gemma: scaled embeddings, `1 + weight` RMSNorm, GeGLU (tanh GELU).

    >>> GemmaConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3}).attention_scale
    0.0625
    """

    MODEL_TYPE = "gemma"
    CHECKS = {"use_bidirectional_attention": (lambda v: not v, "False (causal decoding only)"),
              "attention_bias": (lambda v: not v, "False"),
              # Gemma 1 has no soft-capping (transformers' Gemma ignores these keys); Gemma 2/3 make them fields.
              "attn_logit_softcapping": (lambda v: v is None, "null for gemma; soft-capping is model_type gemma2"),
              "final_logit_softcapping": (lambda v: v is None, "null for gemma; soft-capping is model_type gemma2")}
    SANDWICH: ClassVar[bool] = False  # Gemma 2/3: norms after attention/MLP too
    QK_NORM: ClassVar[bool] = False

    head_dim: int | None = 256
    max_position_embeddings: int = 8192
    hidden_act: str = "gelu_pytorch_tanh"
    tie_word_embeddings: bool = True

    @property
    def act(self) -> str:
        # Official Gemma releases say "gelu" but mean the tanh approximation; transformers rewrites it so.
        return "gelu_pytorch_tanh" if self.hidden_act == "gelu" else self.hidden_act

    @property
    def attention_scale(self) -> float:
        return self.dim_per_head ** -0.5

    @property
    def attention_softcap(self) -> float | None:
        return None

    @property
    def logit_softcap(self) -> float | None:
        return None


@dataclass(frozen=True, kw_only=True)
class Gemma2Config(GemmaConfig):
    """Gemma 2: soft-capping, alternating sliding-window / global layers, sandwich norms.

    >>> Gemma2Config.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 3,
    ...     "num_attention_heads": 3}).attention_kinds()
    ['sliding_attention', 'full_attention', 'sliding_attention']
    """

    MODEL_TYPE = "gemma2"
    SANDWICH = True

    hidden_activation: str = "gelu_pytorch_tanh"
    query_pre_attn_scalar: float = 256
    sliding_window: int | None = 4096
    final_logit_softcapping: float | None = 30.0
    attn_logit_softcapping: float | None = 50.0

    @property
    def act(self) -> str:
        return self.hidden_activation

    @property
    def attention_softcap(self) -> float | None:
        return self.attn_logit_softcapping

    @property
    def logit_softcap(self) -> float | None:
        return self.final_logit_softcapping

    @property
    def attention_scale(self) -> float:
        return self.query_pre_attn_scalar ** -0.5

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(self.num_hidden_layers)]


@dataclass(frozen=True, kw_only=True)
class Gemma3TextConfig(Gemma2Config):
    """Gemma 3 text: q/k norms and separate RoPE bases for local and global layers."""

    MODEL_TYPE = "gemma3_text"
    # transformers 5 writes it beside `layer_types` but reads only `sliding_window_pattern`.
    IGNORED = frozenset({"_sliding_window_pattern"})
    QK_NORM = True
    DEFAULT_ROPE_THETA = 1_000_000.0

    max_position_embeddings: int = 131072
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    rope_local_base_freq: float | None = None   # transformers 4.x form of the local RoPE base
    sliding_window_pattern: int | None = None   # 4.x: every n-th layer is global (default 6)

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        n = self.sliding_window_pattern or 6
        return ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(self.num_hidden_layers)]

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        params = self.rope_parameters
        if params and isinstance(params.get(kind), Mapping):
            return super().rope(kind)
        if kind == "sliding_attention":  # 4.x: local layers use their own base and no scaling
            return float(self.rope_local_base_freq or 10000.0), None
        return super().rope(kind)


def _norm(c: GemmaConfig):
    return lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps, offset=1.0, scale_dtype_first=True)


def _block(c: GemmaConfig, ctx: dict, rng):
    norm, act = _norm(c), activation(c.act)

    def block(p, x, info, kv):
        sliding, keys = info["is_sliding"], KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c,
                               rope=select(sliding, ctx["rope"]), mask=select(sliding, ctx["masks"]),
                               scale=c.attention_scale, kv=kv, index=info["cache_index"],
                               qk_norm=norm if c.QK_NORM else None, softcap=c.attention_softcap)
        a = dropout(a, c.attention_dropout, keys())
        m = p["mlp"]
        if not c.SANDWICH:
            x = x + a
            return x + gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"],
                                 norm(p["post_attention_layernorm"], x), act=act), kv
        x = x + norm(p["post_attention_layernorm"], a)
        h = gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], norm(p["pre_feedforward_layernorm"], x), act=act)
        return x + norm(p["post_feedforward_layernorm"], h), kv

    return block


def forward(params, config: GemmaConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache)."""
    xp = ops().xp
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions), "masks": masks_for(config, positions, key_positions, key_valid)}
    x = embedding(params["embed_tokens"], ids)
    x = x * xp.asarray(math.sqrt(config.hidden_size), dtype=x.dtype)  # rounded to the weights' dtype, as transformers
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x,
                          per_layer={"is_sliding": is_sliding_array(config)}, cache=cache)
    x = _norm(config)(params["norm"], x)
    return x if cache is None else (x, cache)


def shapes(c: GemmaConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    n, k = c.num_attention_heads, c.kv_heads
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    norms = ["input_layernorm", "post_attention_layernorm"]
    if c.SANDWICH:
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (n * h, d), p + "self_attn.k_proj.weight": (k * h, d),
                    p + "self_attn.v_proj.weight": (k * h, d), p + "self_attn.o_proj.weight": (d, n * h),
                    p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f)})
        out.update({p + f"{name}.weight": (d,) for name in norms})
        if c.QK_NORM:
            out[p + "self_attn.q_norm.weight"] = out[p + "self_attn.k_norm.weight"] = (h,)
    return out


def capped_lm_head(params, c: GemmaConfig, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32, soft-capped by `final_logit_softcapping` when set (Gemma 2/3)."""
    logits = lm_head(params, c, hidden)
    cap = c.logit_softcap
    return logits if cap is None else ops().xp.tanh(logits / cap) * cap


def _family(model_type: str, config_class, arch: str, head_arch: str, recipe) -> Family:
    return Family(model_type=model_type, config_class=config_class, prefix="model",
                  base_architecture=f"{arch}Model", forward=forward, shapes=shapes, ignored=IGNORED,
                  heads={"causal_lm": causal_lm_head(f"{head_arch}ForCausalLM", apply=capped_lm_head)},
                  embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"),
                  sharding=SHARDING, recipe=recipe)


FAMILIES = {
    "gemma": _family("gemma", GemmaConfig, "Gemma", "Gemma", tiny_recipe("GemmaConfig", 16, rope_theta=900.0)),
    "gemma2": _family("gemma2", Gemma2Config, "Gemma2", "Gemma2", tiny_recipe(
        "Gemma2Config", 17, sliding_window=TINY_WINDOW, query_pre_attn_scalar=20, attn_logit_softcapping=7.0,
        final_logit_softcapping=9.0, rope_theta=1500.0)),
    "gemma3_text": _family("gemma3_text", Gemma3TextConfig, "Gemma3Text", "Gemma3", tiny_recipe(
        "Gemma3TextConfig", 18, sliding_window=TINY_WINDOW, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": dict(rope_type="default", rope_theta=300.0),
                         "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=20000.0)})),
}
