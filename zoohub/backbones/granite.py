"""Granite (IBM Granite 3.x dense): a Llama with four scalar multipliers (muP-style).

- `embedding_multiplier` scales the token embeddings,
- `attention_multiplier` is the attention scale (in place of head_dim ** -0.5),
- `residual_multiplier` scales the attention and MLP outputs before they join the residual,
- `logits_scaling` divides the final logits.

Tensor names, shapes, RoPE and norms are Llama's.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("granite")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.embedding_multiplier, config.logits_scaling
    (9.0, 0.3)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, KVCache, causal_lm_head, layer_key, lm_head, masks_for, prepare, rope_tables, run_layers,
    self_attention, tiny_recipe,
)
from zoohub.backbones.llama import LlamaConfig, shapes
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, rms_norm


@dataclass(frozen=True, kw_only=True)
class GraniteConfig(LlamaConfig):
    """Granite hyperparameters (transformers' `GraniteConfig` keys): Llama's plus the multipliers.

    >>> GraniteConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "attention_multiplier": 0.015625}).attention_multiplier
    0.015625
    """

    MODEL_TYPE = "granite"

    embedding_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0

    def attention_kinds(self) -> list[str]:
        # transformers' Granite builds a plain causal mask (no sliding window)
        return ["full_attention"] * self.num_hidden_layers


def _block(c: GraniteConfig, ctx: dict, rng):
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c, rope=ctx["rope"],
                               mask=ctx["mask"], scale=c.attention_multiplier, kv=kv, index=info["cache_index"])
        x = x + dropout(a, c.attention_dropout, keys()) * c.residual_multiplier
        m = p["mlp"]
        h = gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], norm(p["post_attention_layernorm"], x), act=act)
        return x + h * c.residual_multiplier, kv

    return block


def forward(params, config: GraniteConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids) * config.embedding_multiplier
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
    return x if cache is None else (x, cache)


def scaled_lm_head(params, c: GraniteConfig, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32, divided by `logits_scaling`."""
    return lm_head(params, c, hidden) / c.logits_scaling


FAMILIES = {
    "granite": Family(
        model_type="granite", config_class=GraniteConfig, prefix="model", base_architecture="GraniteModel",
        forward=forward, shapes=shapes, ignored=IGNORED,
        heads={"causal_lm": causal_lm_head("GraniteForCausalLM", apply=scaled_lm_head)},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # every multiplier far from 1 (and from each other), so a missing or swapped one shows
        recipe=tiny_recipe("GraniteConfig", 31, head_dim=None, embedding_multiplier=9.0, attention_multiplier=0.11,
                           residual_multiplier=0.37, logits_scaling=0.3, rope_theta=4000.0, tie_word_embeddings=True),
    ),
}
