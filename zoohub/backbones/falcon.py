"""Falcon (TII): a decoder with one fused `query_key_value` projection, in three layouts and two block
shapes, with RoPE or ALiBi.

- Falcon-7B (`multi_query`): one key/value head shared by all query heads; a parallel block,
  x + attn(ln(x)) + mlp(ln(x)), with one `input_layernorm`.
- Falcon-40B/180B (`new_decoder_architecture`): `num_kv_heads` key/value groups; the parallel block
  with two norms (`ln_attn`, `ln_mlp`), or one when `num_ln_in_parallel_attn` is 1.
- Falcon-RW (`alibi`, `parallel_attn` false, no multi-query): ALiBi biases instead of RoPE, divided
  by sqrt(head_dim) and rounded as transformers rounds them (`layers.alibi`); a sequential block with
  `post_attention_layernorm`; per-head [q, k, v] interleaved, as BLOOM.
- `bias`: biases on every projection. The head is tied to the embeddings by default.

The fused layouts are one grouped layout (`layers.qkv.split_qkv`): K groups of (N / K query heads,
one key, one value), with K = 1 for multi-query, K = N for per-head interleaving.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("falcon")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.kv_heads, config.norms()                  # the recipe is Falcon-7B-shaped
    (1, ('input_layernorm',))
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, TinyRecipe
from zoohub.backbones.bloom import SHARDING
from zoohub.backbones.decoder import (
    IGNORED, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare, rope_tables, run_layers,
)
from zoohub.layers import (
    KeyStream, activation, alibi_bias, alibi_slopes, apply_rope, dense_mlp, dropout, embedding, layer_norm, linear,
)
from zoohub.layers.qkv import cached_attention, split_qkv


@dataclass(frozen=True, kw_only=True)
class FalconConfig(DecoderConfig):
    """Falcon hyperparameters (transformers' `FalconConfig` keys).

    tiiuae/falcon-rw-1b's config.json (ALiBi, sequential block, biases):

    >>> config = FalconConfig.from_hf({"vocab_size": 50304, "hidden_size": 2048, "num_hidden_layers": 24,
    ...     "num_attention_heads": 32, "alibi": True, "multi_query": False, "parallel_attn": False, "bias": True,
    ...     "new_decoder_architecture": False, "apply_residual_connection_post_layernorm": False})
    >>> config.kv_heads, config.norms(), config.ffn_width
    (32, ('input_layernorm', 'post_attention_layernorm'), 8192)
    """

    MODEL_TYPE = "falcon"
    # apply_residual_connection_post_layernorm: written by Falcon's 4.x configs, never read by its layers.
    # num_key_value_heads: transformers derives it from the keys below and overwrites what the file says.
    IGNORED = frozenset({"apply_residual_connection_post_layernorm", "num_key_value_heads"})

    intermediate_size: int | None = None     # not a Falcon key (ffn_hidden_size); None keeps it out of saves
    rms_norm_eps: float | None = None        # not a Falcon key (its norms are LayerNorms)
    ffn_hidden_size: int | None = None       # F (None: 4 D)
    activation: str = "gelu"                 # the exact erf GELU
    layer_norm_epsilon: float = 1e-5
    hidden_dropout: float = 0.0
    num_kv_heads: int | None = None          # K of new_decoder_architecture (None: N)
    num_ln_in_parallel_attn: int | None = None
    alibi: bool = False                      # ALiBi biases instead of RoPE
    new_decoder_architecture: bool = False
    multi_query: bool = True                 # one kv head (ignored by new_decoder_architecture)
    parallel_attn: bool = True               # attention and MLP side by side (ignored by new_decoder_architecture)
    bias: bool = False
    tie_word_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.num_ln_in_parallel_attn not in (None, 1, 2):
            raise ValueError(f"num_ln_in_parallel_attn is {self.num_ln_in_parallel_attn}, not 1 or 2")
        if self.num_ln_in_parallel_attn == 2 and self.parallel_attn and not self.new_decoder_architecture:
            # transformers builds ln_attn/ln_mlp but its forward reads input_layernorm: it cannot run
            raise ValueError("num_ln_in_parallel_attn=2 needs new_decoder_architecture")

    @property
    def kv_heads(self) -> int:
        if self.new_decoder_architecture:
            return self.num_kv_heads or self.num_attention_heads
        return 1 if self.multi_query else self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_width(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def parallel(self) -> bool:
        return self.new_decoder_architecture or self.parallel_attn

    def norms(self) -> tuple[str, ...]:
        """The LayerNorms of a block."""
        if not self.parallel:
            return ("input_layernorm", "post_attention_layernorm")
        if self.new_decoder_architecture and self.num_ln_in_parallel_attn != 1:
            return ("ln_attn", "ln_mlp")
        return ("input_layernorm",)

    def attention_kinds(self) -> list[str]:
        return ["full_attention"] * self.num_hidden_layers


def forward(params, config: FalconConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = masks_for(c, positions, key_positions, key_valid)["full_attention"]
    h = c.dim_per_head
    if c.alibi:
        rope, bias = None, alibi_bias(alibi_slopes(c.num_attention_heads), key_positions, scale=h ** -0.5,
                                      bfloat16_product=True)
    else:
        rope, bias = rope_tables(c, positions)["full_attention"], None
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_epsilon)  # noqa: E731
    act, names = activation(c.activation), c.norms()

    def block(p, x, info, kv):
        b, t, d = x.shape
        keys = KeyStream(layer_key(rng, info["index"]))
        attn_in = norm(p[names[0]], x)
        attn = p["self_attention"]
        q, k, v = split_qkv(linear(attn["query_key_value"], attn_in), num_kv_heads=c.kv_heads, head_dim=h)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        a, kv = cached_attention(q, k, v, kv=kv, index=info["cache_index"], scale=h ** -0.5, mask=mask, bias=bias)
        # transformers drops attention probabilities (attention_dropout); here, as elsewhere, the output
        a = linear(attn["dense"], dropout(a, c.attention_dropout, keys()).reshape(b, t, d))
        mlp = lambda y: dense_mlp(p["mlp"]["dense_h_to_4h"], p["mlp"]["dense_4h_to_h"], y, act=act)  # noqa: E731
        if not c.parallel:
            x = x + dropout(a, c.attention_dropout, keys())  # transformers' rate for this residual
            return x + dropout(mlp(norm(p["post_attention_layernorm"], x)), c.hidden_dropout, keys()), kv
        m = mlp(norm(p[names[1]], x) if len(names) == 2 else attn_in)
        return x + dropout(m + a, c.hidden_dropout, keys()), kv

    x = embedding(params["word_embeddings"], ids)
    x, cache = run_layers(block, params["h"], x, cache=cache)
    x = norm(params["ln_f"], x)
    return x if cache is None else (x, cache)


def shapes(c: FalconConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.ffn_width, c.dim_per_head
    out = {"word_embeddings.weight": (c.vocab_size, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    linears = {"self_attention.query_key_value": ((c.num_attention_heads + 2 * c.kv_heads) * h, d),
               "self_attention.dense": (d, d), "mlp.dense_h_to_4h": (f, d), "mlp.dense_4h_to_h": (d, f)}
    for i in range(c.num_hidden_layers):
        for name, shape in linears.items():
            out[f"h.{i}.{name}.weight"] = shape
            if c.bias:
                out[f"h.{i}.{name}.bias"] = shape[:1]
        for name in c.norms():
            out[f"h.{i}.{name}.weight"] = out[f"h.{i}.{name}.bias"] = (d,)
    return out


FAMILIES = {
    "falcon": Family(
        model_type="falcon", config_class=FalconConfig, prefix="transformer", base_architecture="FalconModel",
        forward=forward, shapes=shapes, embeddings="word_embeddings", layers="h", ignored=IGNORED,
        heads={"causal_lm": causal_lm_head("FalconForCausalLM")},
        lora_targets=("query_key_value",), sharding=SHARDING,
        # Falcon-7B's layout (multi-query, parallel block, one norm, RoPE); the other layouts are in
        # tests/decoder/test_classic_variants.py
        recipe=TinyRecipe(config="FalconConfig", seed=23, kwargs=dict(
            vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, ffn_hidden_size=80,
            max_position_embeddings=128, layer_norm_epsilon=3e-5, initializer_range=0.5, multi_query=True,
            parallel_attn=True, new_decoder_architecture=False, alibi=False, bias=False,
            rope_parameters=dict(rope_type="default", rope_theta=3000.0), tie_word_embeddings=False,
            hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    ),
}
