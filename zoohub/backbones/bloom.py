"""BLOOM (BigScience): a decoder without position embeddings, ALiBi biases in attention instead.

- A LayerNorm right after the token embeddings (`word_embeddings_layernorm`), pre-norm blocks.
- One fused `query_key_value` projection, interleaved per head ([q, k, v] for head 0, then head 1...),
  kept as the checkpoint's tensor and split after the matmul (`layers.qkv.split_qkv`).
- ALiBi: each head adds `slope * key_position` to its scores (`layers.alibi`); positions count real
  tokens, so left padding and the KV cache need nothing else. BLOOM takes them from the attention
  mask and ignores `position_ids`; here the positions of `decoder.prepare` are used, which are the same
  unless a caller passes other `position_ids`.
- MLP 4 D wide with the tanh GELU; `apply_residual_connection_post_layernorm` makes the normed input
  the residual. The head is tied to the embeddings.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("bloom")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import KVCache, causal_lm_head, layer_key, prepare, run_layers
from zoohub.layers import (
    KeyStream, activation, alibi_bias, alibi_slopes, causal_mask, dense_mlp, dropout, embedding, layer_norm, linear,
)
from zoohub.layers.qkv import cached_attention, split_qkv

# transformers' config keys and the aliases BLOOM's config.json files use (bigscience/bloom: n_embed,
# num_attention_heads); both name one hyperparameter and are filled in from each other.
ALIASES = (("hidden_size", "n_embed"), ("n_head", "num_attention_heads"), ("n_layer", "num_hidden_layers"))


@dataclass(frozen=True, kw_only=True)
class BloomConfig(ModelConfig):
    """BLOOM hyperparameters (transformers' `BloomConfig` keys, and their aliases).

    bigscience/bloom-560m's config.json (Megatron-DeepSpeed keys that transformers never reads pass):

    >>> config = BloomConfig.from_hf({"vocab_size": 250880, "hidden_size": 1024, "n_layer": 24, "n_head": 16,
    ...     "masked_softmax_fusion": True, "offset_alibi": 100, "skip_bias_add": True, "n_inner": None})
    >>> config.num_hidden_layers, config.dim_per_head
    (24, 64)
    """

    MODEL_TYPE = "bloom"
    # Read by Megatron-DeepSpeed, never by transformers' BLOOM: fused-kernel switches, the softmax dtype
    # (float32 here always), `n_inner` (the MLP is 4 D wide whatever it says), and `pretraining_tp` with
    # `slow_but_exact`, which only split the output projections' sums into slices (the same sums).
    IGNORED = frozenset({"masked_softmax_fusion", "bias_dropout_fusion", "attention_softmax_in_fp32", "skip_bias_add",
                         "skip_bias_add_qkv", "offset_alibi", "seq_length", "n_inner", "pretraining_tp",
                         "slow_but_exact"})

    vocab_size: int                                 # V
    hidden_size: int | None = None                  # D (alias n_embed)
    n_embed: int | None = None
    n_layer: int | None = None                      # L (alias num_hidden_layers)
    num_hidden_layers: int | None = None
    n_head: int | None = None                       # N (alias num_attention_heads)
    num_attention_heads: int | None = None
    layer_norm_epsilon: float = 1e-5
    apply_residual_connection_post_layernorm: bool = False
    hidden_dropout: float = 0.0                     # on the attention and MLP outputs
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self):
        defaults = {"hidden_size": 64, "n_layer": 2, "n_head": 8}  # transformers' BloomConfig defaults
        for key, alias in ALIASES:
            a, b = getattr(self, key), getattr(self, alias)
            if a is not None and b is not None and a != b:
                raise ValueError(f"{key}={a} and its alias {alias}={b} disagree")
            value = a if a is not None else b if b is not None else defaults[key]
            object.__setattr__(self, key, value)
            object.__setattr__(self, alias, value)
        if self.hidden_size % self.n_head:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.n_head} heads")

    @property
    def kv_heads(self) -> int:
        return self.n_head

    @property
    def dim_per_head(self) -> int:
        return self.hidden_size // self.n_head


def forward(params, config: BloomConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = key_valid & causal_mask(positions, key_positions)
    bias = alibi_bias(alibi_slopes(c.n_head), key_positions)
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_epsilon)  # noqa: E731
    act = activation("gelu_tanh")  # BloomGelu: the tanh approximation, written out by hand
    h = c.dim_per_head
    x = norm(params["word_embeddings_layernorm"], embedding(params["word_embeddings"], ids))

    def block(p, x, info, kv):
        b, t, d = x.shape
        keys = KeyStream(layer_key(rng, info["index"]))
        normed = norm(p["input_layernorm"], x)
        residual = normed if c.apply_residual_connection_post_layernorm else x
        attn = p["self_attention"]
        q, k, v = split_qkv(linear(attn["query_key_value"], normed), num_kv_heads=c.n_head, head_dim=h)
        a, kv = cached_attention(q, k, v, kv=kv, index=info["cache_index"], scale=h ** -0.5, mask=mask, bias=bias)
        # transformers drops attention probabilities (attention_dropout); here, as elsewhere, the output
        a = dropout(linear(attn["dense"], dropout(a, c.attention_dropout, keys()).reshape(b, t, d)),
                    c.hidden_dropout, keys())
        x = residual + a
        normed = norm(p["post_attention_layernorm"], x)
        residual = normed if c.apply_residual_connection_post_layernorm else x
        m = dense_mlp(p["mlp"]["dense_h_to_4h"], p["mlp"]["dense_4h_to_h"], normed, act=act)
        return residual + dropout(m, c.hidden_dropout, keys()), kv

    x, cache = run_layers(block, params["h"], x, cache=cache)
    x = norm(params["ln_f"], x)
    return x if cache is None else (x, cache)


def shapes(c: BloomConfig) -> dict[str, tuple]:
    d = c.hidden_size
    out = {"word_embeddings.weight": (c.vocab_size, d)}
    for name in ("word_embeddings_layernorm", "ln_f"):
        out[f"{name}.weight"] = out[f"{name}.bias"] = (d,)
    linears = {"self_attention.query_key_value": (3 * d, d), "self_attention.dense": (d, d),
               "mlp.dense_h_to_4h": (4 * d, d), "mlp.dense_4h_to_h": (d, 4 * d)}
    for i in range(c.n_layer):
        for name, shape in linears.items():  # every BLOOM Linear has a bias
            out[f"h.{i}.{name}.weight"], out[f"h.{i}.{name}.bias"] = shape, shape[:1]
        for name in ("input_layernorm", "post_attention_layernorm"):
            out[f"h.{i}.{name}.weight"] = out[f"h.{i}.{name}.bias"] = (d,)
    return out


# Megatron-style over "model" (BLOOM and Falcon share these names): the fused query_key_value and
# dense_h_to_4h split their output rows, dense and dense_4h_to_h their input columns. In the grouped
# fused layout (`layers.qkv`) rows come group by group, so a row split hands each device whole heads
# (BLOOM, Falcon-RW) or whole kv groups (Falcon-40B) when their count divides by the axis; where it
# does not (3 heads here, Falcon-7B's single kv head) the split is still exact: XLA moves the slices
# the attention needs after the matmul.
SHARDING = (
    (r"\.(query_key_value|dense_h_to_4h)\.weight$", ("model", None)),
    (r"\.(query_key_value|dense_h_to_4h)\.bias$", ("model",)),
    (r"\.(dense|dense_4h_to_h)\.weight$", (None, "model")),
    (r"\.(dense|dense_4h_to_h)\.bias$", ()),
    (r"(^|\.)word_embeddings\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(layernorm|ln_f|ln_attn|ln_mlp)\.(weight|bias)$", ()),
)

FAMILIES = {
    "bloom": Family(
        model_type="bloom", config_class=BloomConfig, prefix="transformer", base_architecture="BloomModel",
        forward=forward, shapes=shapes, embeddings="word_embeddings", layers="h",
        heads={"causal_lm": causal_lm_head("BloomForCausalLM")},
        max_length=lambda c: None,  # ALiBi has no position table
        lora_targets=("query_key_value",), sharding=SHARDING,
        # 3 heads: slopes of a non-power-of-two head count; the normed input as the residual
        recipe=TinyRecipe(config="BloomConfig", seed=22, kwargs=dict(
            vocab_size=97, hidden_size=48, n_layer=2, n_head=3, layer_norm_epsilon=3e-5, initializer_range=0.5,
            apply_residual_connection_post_layernorm=True, hidden_dropout=0.0, attention_dropout=0.0,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    ),
}
