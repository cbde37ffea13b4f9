"""Cohere (Command R, Aya 23): a parallel block on a LayerNorm without bias, interleaved RoPE, a logit scale.

- One LayerNorm (weight only, float32) feeds both attention and MLP: x + attn(ln(x)) + mlp(ln(x)).
- RoPE turns adjacent feature pairs (x0, x1), (x2, x3) ... rather than the two halves of each head.
- Optional q/k LayerNorms (`use_qk_norm`, Command R+) over each head's features, with a weight per
  head ([N, H], [K, H]).
- SwiGLU MLP, tied embeddings, logits multiplied by `logit_scale`.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("cohere")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> params["layers"]["self_attn"]["q_norm"]["weight"].shape    # [L, N, H]
    (2, 3, 16)
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, DecoderConfig, KVCache, causal_lm_head, layer_key, lm_head, masks_for, prepare, rope_tables,
    run_layers, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, layer_norm


@dataclass(frozen=True, kw_only=True)
class CohereConfig(DecoderConfig):
    """Cohere hyperparameters (transformers' `CohereConfig` keys).

    >>> config = CohereConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
    ...     "num_hidden_layers": 2, "num_attention_heads": 3})
    >>> config.logit_scale, config.rope()[0]
    (0.0625, 500000.0)
    """

    MODEL_TYPE = "cohere"
    DEFAULT_ROPE_THETA = 500_000.0

    max_position_embeddings: int = 8192
    rms_norm_eps: float | None = None   # not a Cohere key (its norms are LayerNorms); None keeps it out of saves
    layer_norm_eps: float = 1e-5
    logit_scale: float = 0.0625
    hidden_act: str = "silu"
    attention_bias: bool = False
    use_qk_norm: bool = False
    tie_word_embeddings: bool = True

    def attention_kinds(self) -> list[str]:
        # transformers' Cohere builds a plain causal mask
        return ["full_attention"] * self.num_hidden_layers


def _block(c: CohereConfig, ctx: dict, rng):
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        h = norm(p["input_layernorm"], x)
        a, kv = self_attention(p["self_attn"], h, config=c, rope=ctx["rope"], mask=ctx["mask"],
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"],
                               qk_norm=norm if c.use_qk_norm else None, interleaved=True)
        m = p["mlp"]
        return x + dropout(a, c.attention_dropout, keys()) + gated_mlp(
            m["gate_proj"], m["up_proj"], m["down_proj"], h, act=act), kv

    return block


def forward(params, config: CohereConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after the final LayerNorm); with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions, interleaved=True)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids)
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = layer_norm(params["norm"], x, eps=config.layer_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: CohereConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    n, k = c.num_attention_heads, c.kv_heads
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    proj = {"q_proj": (n * h, d), "k_proj": (k * h, d), "v_proj": (k * h, d), "o_proj": (d, n * h)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in proj.items():
            out[p + f"self_attn.{name}.weight"] = shape
            if c.attention_bias:
                out[p + f"self_attn.{name}.bias"] = shape[:1]
        if c.use_qk_norm:
            out[p + "self_attn.q_norm.weight"], out[p + "self_attn.k_norm.weight"] = (n, h), (k, h)
        out.update({p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f), p + "input_layernorm.weight": (d,)})
    return out


def scaled_lm_head(params, c: CohereConfig, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32, multiplied by `logit_scale`."""
    return lm_head(params, c, hidden) * c.logit_scale


FAMILIES = {
    "cohere": Family(
        model_type="cohere", config_class=CohereConfig, prefix="model", base_architecture="CohereModel",
        forward=forward, shapes=shapes, ignored=IGNORED,
        heads={"causal_lm": causal_lm_head("CohereForCausalLM", apply=scaled_lm_head)},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # q/k norms on (Command R+'s setting), a logit scale far from 1
        recipe=tiny_recipe("CohereConfig", 34, rms_norm_eps=None, layer_norm_eps=3e-5, use_qk_norm=True,
                           logit_scale=2.5, rope_theta=1200.0),
    ),
}
