"""StarCoder2 (3B, 7B, 15B): a pre-norm decoder with GQA and RoPE, LayerNorms with bias, biases on every
projection (`use_bias`), a plain GELU MLP (`c_fc` -> tanh GELU -> `c_proj`) and sliding-window attention
on every layer when `sliding_window` is set. Embeddings are tied by default.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("starcoder2")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.attention_kinds(), config.sliding_window
    (['sliding_attention', 'sliding_attention'], 5)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare,
    rope_tables, run_layers, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dense_mlp, dropout, embedding, layer_norm


@dataclass(frozen=True, kw_only=True)
class Starcoder2Config(DecoderConfig):
    """StarCoder2 hyperparameters (transformers' `Starcoder2Config` keys).

    StarCoder2-3B's config.json (transformers 4.x form):

    >>> config = Starcoder2Config.from_hf({"vocab_size": 49152, "hidden_size": 3072, "intermediate_size": 12288,
    ...     "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2, "norm_epsilon": 1e-05,
    ...     "rope_theta": 999999.4420358813, "sliding_window": 4096, "use_bias": True, "hidden_act": "gelu_pytorch_tanh"})
    >>> config.kv_heads, config.dim_per_head, config.attention_kinds()[0]
    (2, 128, 'sliding_attention')
    >>> import math     # Starcoder2ForCausalLM's parameters (the lm_head is the embedding table)
    >>> sum(math.prod(s) for s in shapes(config).values())
    3030371328
    """

    MODEL_TYPE = "starcoder2"
    # Left in the hub's StarCoder2 configs by BigCode's export; transformers' Starcoder2 never reads them
    # (it always builds LayerNorms from `norm_epsilon` and the c_fc/c_proj MLP).
    IGNORED = frozenset({"mlp_type", "norm_type", "layer_norm_epsilon"})

    num_key_value_heads: int | None = 2       # transformers' default (not "equal to the heads")
    max_position_embeddings: int = 4096
    rms_norm_eps: float | None = None         # not a StarCoder2 key (its norms are LayerNorms)
    norm_epsilon: float = 1e-5
    hidden_act: str = "gelu_pytorch_tanh"
    use_bias: bool = True
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    initializer_range: float = 0.018042
    tie_word_embeddings: bool = True

    def attention_kinds(self) -> list[str]:
        # transformers' StarCoder2 slides on every layer when `sliding_window` is set (no `layer_types`)
        kind = "sliding_attention" if self.sliding_window else "full_attention"
        return [kind] * self.num_hidden_layers


def _block(c: Starcoder2Config, ctx: dict, rng):
    """The decoder layer as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: layer_norm(p, x, eps=c.norm_epsilon)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c, rope=ctx["rope"],
                               mask=ctx["mask"], scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"])
        # transformers drops attention probabilities (attention_dropout); here, as in llama.py, the output
        x = x + dropout(dropout(a, c.attention_dropout, keys()), c.residual_dropout, keys())
        m = dense_mlp(p["mlp"]["c_fc"], p["mlp"]["c_proj"], norm(p["post_attention_layernorm"], x), act=act)
        return x + dropout(m, c.residual_dropout, keys()), kv

    return block


def forward(params, config: Starcoder2Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `norm`); with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    kind = config.attention_kinds()[0]
    ctx = {"rope": rope_tables(config, positions)[kind], "mask": masks_for(config, positions, key_positions, key_valid)[kind]}
    x = embedding(params["embed_tokens"], ids)
    x = dropout(x, config.embedding_dropout, layer_key(rng, config.num_hidden_layers))  # a key no layer uses
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = layer_norm(params["norm"], x, eps=config.norm_epsilon)
    return x if cache is None else (x, cache)


def shapes(c: Starcoder2Config) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    q, kv = c.num_attention_heads * h, c.kv_heads * h
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,), "norm.bias": (d,)}
    linears = {"self_attn.q_proj": (q, d), "self_attn.k_proj": (kv, d), "self_attn.v_proj": (kv, d),
               "self_attn.o_proj": (d, q), "mlp.c_fc": (f, d), "mlp.c_proj": (d, f)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in linears.items():
            out[p + f"{name}.weight"] = shape
            if c.use_bias:
                out[p + f"{name}.bias"] = shape[:1]
        for name in ("input_layernorm", "post_attention_layernorm"):
            out[p + f"{name}.weight"] = out[p + f"{name}.bias"] = (d,)
    return out


# Megatron-style like `decoder.SHARDING`, for StarCoder2's MLP names: c_fc fans out, c_proj fans in.
STARCODER2_SHARDING = (
    (r"\.c_fc\.weight$", ("model", None)),
    (r"\.c_fc\.bias$", ("model",)),
    (r"\.c_proj\.weight$", (None, "model")),
    (r"\.c_proj\.bias$", ()),
) + SHARDING

FAMILIES = {
    "starcoder2": Family(
        model_type="starcoder2", config_class=Starcoder2Config, prefix="model", base_architecture="Starcoder2Model",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": causal_lm_head("Starcoder2ForCausalLM")},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=STARCODER2_SHARDING,
        # a window shorter than the test prompts, non-default norm eps and RoPE theta, tied embeddings
        recipe=tiny_recipe("Starcoder2Config", 22, head_dim=None, rms_norm_eps=None, norm_epsilon=3e-5,
                           sliding_window=TINY_WINDOW, rope_parameters=dict(rope_type="default", rope_theta=4321.0),
                           use_bias=True, residual_dropout=0.0, embedding_dropout=0.0, tie_word_embeddings=True),
    ),
}
