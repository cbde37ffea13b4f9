"""OLMo 2: a Llama-shaped decoder with norms after the sublayers and q/k RMSNorm over the whole projection.

- No norm before attention or MLP: x + post_attention_layernorm(attn(x)), then
  x + post_feedforward_layernorm(mlp(x)).
- `q_norm` / `k_norm` are RMSNorms over all N*H (K*H) features of the projection, before the head
  split (Qwen3's work per head).
- RMSNorm multiplies by its weight in float32 before casting back (Llama casts first).

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("olmo2")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> params["layers"]["self_attn"]["q_norm"]["weight"].shape    # [L, N*H]
    (2, 48)
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare, rope_tables,
    run_layers, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, rms_norm


@dataclass(frozen=True, kw_only=True)
class Olmo2Config(DecoderConfig):
    """OLMo 2 hyperparameters (transformers' `Olmo2Config` keys).

    >>> Olmo2Config.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3}).rms_norm_eps
    1e-05
    """

    MODEL_TYPE = "olmo2"

    rms_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    def attention_kinds(self) -> list[str]:
        # transformers' OLMo 2 builds a plain causal mask
        return ["full_attention"] * self.num_hidden_layers


def _norm(c: Olmo2Config):
    return lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps, scale_dtype_first=True)


def _whole_projection_norm(c: Olmo2Config):
    """q/k norm over the projection's N*H features, given the heads [B, T, N, H]."""
    norm = _norm(c)
    return lambda p, x: norm(p, x.reshape(*x.shape[:-2], -1)).reshape(x.shape)


def _block(c: Olmo2Config, ctx: dict, rng):
    norm, act = _norm(c), activation(c.hidden_act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], x, config=c, rope=ctx["rope"], mask=ctx["mask"],
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"],
                               qk_norm=_whole_projection_norm(c))
        x = x + norm(p["post_attention_layernorm"], dropout(a, c.attention_dropout, keys()))
        m = p["mlp"]
        h = gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], x, act=act)
        return x + norm(p["post_feedforward_layernorm"], h), kv

    return block


def forward(params, config: Olmo2Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids)
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = _norm(config)(params["norm"], x)
    return x if cache is None else (x, cache)


def shapes(c: Olmo2Config) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    q, kv = c.num_attention_heads * h, c.kv_heads * h
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    proj = {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in proj.items():
            out[p + f"self_attn.{name}.weight"] = shape
            if c.attention_bias:
                out[p + f"self_attn.{name}.bias"] = shape[:1]
        out[p + "self_attn.q_norm.weight"], out[p + "self_attn.k_norm.weight"] = (q,), (kv,)
        out.update({p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f)})
        out[p + "post_attention_layernorm.weight"] = out[p + "post_feedforward_layernorm.weight"] = (d,)
    return out


FAMILIES = {
    "olmo2": Family(
        model_type="olmo2", config_class=Olmo2Config, prefix="model", base_architecture="Olmo2Model",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": causal_lm_head("Olmo2ForCausalLM")},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # biases on (OLMo 2 releases have them off) so the test checkpoint covers them
        recipe=tiny_recipe("Olmo2Config", 33, head_dim=None, attention_bias=True, rope_theta=3500.0),
    ),
}
