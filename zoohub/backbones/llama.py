"""Llama (also SmolLM/SmolLM2), Mistral, Qwen2 and Qwen3: pre-norm decoders with RMSNorm, RoPE,
grouped-query attention and a SwiGLU MLP. They differ in small, declared ways:

- Mistral: sliding-window attention on every layer (`sliding_window`).
- Qwen2: biases on q/k/v (not o); sliding window on layers >= `max_window_layers` when enabled.
- Qwen3: per-head RMSNorm on q and k before RoPE (`q_norm`, `k_norm`).

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("qwen3")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> ids = np.array([[5, 6, 7]])
    >>> family.forward(params, config, {"input_ids": ids}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, DecoderConfig, KVCache, causal_lm_head, is_sliding_array, layer_key, masks_for,
    prepare, rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, rms_norm


@dataclass(frozen=True, kw_only=True)
class LlamaConfig(DecoderConfig):
    """Llama (and SmolLM/SmolLM2): GQA, RoPE with llama3/linear scaling, RMSNorm, SwiGLU.

    >>> config = LlamaConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
    ...     "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1})
    >>> config.kv_heads, config.dim_per_head, config.rope()
    (1, 16, (10000.0, None))
    """

    MODEL_TYPE = "llama"
    # pretraining_tp: transformers 4 split the matmul by it (same math), 5 never reads it. nanotron's
    # exporter (SmolLM2) writes the other two; transformers' Llama rotates halves, never interleaved pairs.
    IGNORED = frozenset({"pretraining_tp", "is_llama_config"})
    CHECKS = {"rope_interleaved": (lambda v: not v, "false (rotation of halves, as transformers' Llama)")}
    QK_NORM: ClassVar[bool] = False
    QKV_BIAS: ClassVar[bool | None] = None   # None: `attention_bias` decides (and covers o_proj too)


    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False


@dataclass(frozen=True, kw_only=True)
class MistralConfig(LlamaConfig):
    """Mistral: Llama with sliding-window attention.

    >>> MistralConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
    ...     "num_hidden_layers": 2, "num_attention_heads": 3}).attention_kinds()
    ['sliding_attention', 'sliding_attention']
    """

    MODEL_TYPE = "mistral"
    max_position_embeddings: int = 131072
    sliding_window: int | None = 4096  # transformers' default; an explicit null turns it off


@dataclass(frozen=True, kw_only=True)
class Qwen2Config(LlamaConfig):
    """Qwen2: Llama with q/k/v biases and per-layer sliding-window settings.

    >>> Qwen2Config.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 3,
    ...     "num_attention_heads": 3, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1,
    ...     }).attention_kinds()
    ['full_attention', 'sliding_attention', 'sliding_attention']
    """

    MODEL_TYPE = "qwen2"
    QKV_BIAS = True
    max_position_embeddings: int = 32768
    use_sliding_window: bool = False
    max_window_layers: int | None = 28

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        # transformers' rule for configs written before `layer_types` existed
        slide = self.use_sliding_window and self.sliding_window
        return ["sliding_attention" if slide and i >= (self.max_window_layers or 0) else "full_attention"
                for i in range(self.num_hidden_layers)]


@dataclass(frozen=True, kw_only=True)
class Qwen3Config(Qwen2Config):
    """Qwen3: Qwen2 with per-head q/k RMSNorm (and `attention_bias` covering all four projections)."""

    MODEL_TYPE = "qwen3"
    QK_NORM = True
    QKV_BIAS = None


def _has_bias(c: LlamaConfig, proj: str) -> bool:
    if c.QKV_BIAS is None:
        return c.attention_bias
    return c.QKV_BIAS and proj != "o_proj"


def _block(c: LlamaConfig, ctx: dict, rng):
    """The decoder layer as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        sliding, keys = info["is_sliding"], KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c,
                               rope=select(sliding, ctx["rope"]), mask=select(sliding, ctx["masks"]),
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"],
                               qk_norm=norm if c.QK_NORM else None)
        x = x + dropout(a, c.attention_dropout, keys())
        m = p["mlp"]
        x = x + gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], norm(p["post_attention_layernorm"], x), act=act)
        return x, kv

    return block


def forward(params, config: LlamaConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache). See `decoder` for inputs."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions), "masks": masks_for(config, positions, key_positions, key_valid)}
    x = embedding(params["embed_tokens"], ids)
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x,
                          per_layer={"is_sliding": is_sliding_array(config)}, cache=cache)
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: LlamaConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    proj = {"q_proj": (c.num_attention_heads * h, d), "k_proj": (c.kv_heads * h, d),
            "v_proj": (c.kv_heads * h, d), "o_proj": (d, c.num_attention_heads * h)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in proj.items():
            out[p + f"self_attn.{name}.weight"] = shape
            if _has_bias(c, name):
                out[p + f"self_attn.{name}.bias"] = shape[:1]
        if c.QK_NORM:
            out[p + "self_attn.q_norm.weight"] = out[p + "self_attn.k_norm.weight"] = (h,)
        for name, shape in {"gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}.items():
            out[p + f"mlp.{name}.weight"] = shape
            if c.mlp_bias:
                out[p + f"mlp.{name}.bias"] = shape[:1]
        out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = (d,)
    return out


def _family(model_type: str, config_class, arch: str, recipe) -> Family:
    return Family(model_type=model_type, config_class=config_class, prefix="model",
                  base_architecture=f"{arch}Model", forward=forward, shapes=shapes, ignored=IGNORED,
                  heads={"causal_lm": causal_lm_head(f"{arch}ForCausalLM")},
                  embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"),
                  sharding=SHARDING, recipe=recipe)


FAMILIES = {
    "llama": _family("llama", LlamaConfig, "Llama", tiny_recipe(
        "LlamaConfig", 12, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=5000.0, factor=4.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=16))),
    "mistral": _family("mistral", MistralConfig, "Mistral", tiny_recipe(
        "MistralConfig", 13, sliding_window=TINY_WINDOW, rope_theta=777.0)),
    "qwen2": _family("qwen2", Qwen2Config, "Qwen2", tiny_recipe(
        "Qwen2Config", 14, head_dim=None, use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=1,
        tie_word_embeddings=True, rope_theta=3000.0)),
    "qwen3": _family("qwen3", Qwen3Config, "Qwen3", tiny_recipe("Qwen3Config", 15, rope_theta=2500.0)),
}
