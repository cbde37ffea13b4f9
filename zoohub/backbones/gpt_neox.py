"""GPT-NeoX (Pythia, GPT-NeoX-20B, RedPajama-INCITE): a pre-norm decoder with LayerNorms (with bias), one
fused q/k/v projection, RoPE on the first `rotary_pct` of each head's features, a GELU MLP and, by
default, a parallel residual: x + attn(ln1(x)) + mlp(ln2(x)) (`use_parallel_residual`).

The fused `query_key_value` weight [3 N H, D] is held as the checkpoint stores it and split in the
forward pass. Its rows are grouped by head, [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] (NeoX's layout, not
[all q | all k | all v]), so a row split over the `model` mesh axis keeps whole heads on a device
when the shard count divides the heads.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("gpt_neox")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.dim_per_head, config.rotary_dim(), config.use_parallel_residual
    (12, 6, True)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare, rope_checks, rope_tables,
    run_layers, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dense_mlp, dropout, embedding, layer_norm, linear
from zoohub.layers.qkv import split_qkv


@dataclass(frozen=True, kw_only=True)
class GPTNeoXConfig(DecoderConfig):
    """GPT-NeoX hyperparameters (transformers' `GPTNeoXConfig` keys).

    Pythia-160M's config.json (transformers 4.x form: `rotary_pct`, `rotary_emb_base`):

    >>> config = GPTNeoXConfig.from_hf({"vocab_size": 50304, "hidden_size": 768, "intermediate_size": 3072,
    ...     "num_hidden_layers": 12, "num_attention_heads": 12, "rotary_pct": 0.25, "rotary_emb_base": 10000,
    ...     "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-05, "tie_word_embeddings": False})
    >>> config.dim_per_head, config.rotary_dim(), config.rope()
    (64, 16, (10000.0, None))
    >>> import math     # GPTNeoXForCausalLM's parameters: backbone + untied embed_out
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    162322944
    """

    MODEL_TYPE = "gpt_neox"
    CHECKS = rope_checks(partial_rotary=True)
    # is_decoder: transformers 5 writes it (False) and never reads it; the model is causal either way.
    # classifier_dropout: only GPTNeoXForTokenClassification reads it.
    IGNORED = frozenset({"is_decoder", "classifier_dropout"})
    # transformers' GPTNeoXConfig falls back to these when neither the 4.x keys nor `rope_parameters` give them
    DEFAULT_PARTIAL_ROTARY_FACTOR: ClassVar[float] = 0.25

    max_position_embeddings: int = 2048
    rms_norm_eps: float | None = None         # not a NeoX key (its norms are LayerNorms)
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"                  # the exact erf GELU
    attention_bias: bool = True
    use_parallel_residual: bool = True
    hidden_dropout: float = 0.0
    rotary_pct: float | None = None           # transformers 4.x form of partial_rotary_factor
    rotary_emb_base: float | None = None      # transformers 4.x form of rope_theta
    tie_word_embeddings: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.num_key_value_heads not in (None, self.num_attention_heads):
            raise ValueError("GPT-NeoX has no grouped-query attention: num_key_value_heads must equal the heads")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")

    @property
    def dim_per_head(self) -> int:
        return self.hidden_size // self.num_attention_heads  # transformers' NeoX never reads `head_dim`

    def attention_kinds(self) -> list[str]:
        # transformers' NeoX builds a full causal mask whatever `sliding_window` / `layer_types` say
        return ["full_attention"] * self.num_hidden_layers

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        theta, scaling = super().rope(kind)
        if not (self.rope_parameters or {}).get("rope_theta") and self.rope_theta is None and self.rotary_emb_base:
            theta = float(self.rotary_emb_base)
        return theta, scaling

    def rotary_dim(self, kind: str = "full_attention") -> int:
        return self.partial_rotary_dim(kind, self.rotary_pct, self.DEFAULT_PARTIAL_ROTARY_FACTOR)


def _block(c: GPTNeoXConfig, ctx: dict, rng):
    """The decoder layer (parallel or sequential) as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def mlp(m, h):
        return dense_mlp(m["dense_h_to_4h"], m["dense_4h_to_h"], h, act=act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        att = p["attention"]
        h = norm(p["input_layernorm"], x)
        # NeoX's grouping is one group per head (q_n k_n v_n): `split_qkv` with K = N
        qkv = split_qkv(linear(att["query_key_value"], h), num_kv_heads=c.num_attention_heads, head_dim=c.dim_per_head)
        a, kv = self_attention({"o_proj": att["dense"]}, h, config=c, rope=ctx["rope"], mask=ctx["mask"],
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"], projections=qkv)
        # transformers drops attention probabilities (attention_dropout); here, as in llama.py, the output
        a = dropout(dropout(a, c.attention_dropout, keys()), c.hidden_dropout, keys())
        if c.use_parallel_residual:
            return x + a + dropout(mlp(p["mlp"], norm(p["post_attention_layernorm"], x)), c.hidden_dropout, keys()), kv
        x = x + a
        return x + dropout(mlp(p["mlp"], norm(p["post_attention_layernorm"], x)), c.hidden_dropout, keys()), kv

    return block


def forward(params, config: GPTNeoXConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `final_layer_norm`); with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_in"], ids)
    x = dropout(x, config.hidden_dropout, layer_key(rng, config.num_hidden_layers))  # a key no layer uses
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = layer_norm(params["final_layer_norm"], x, eps=config.layer_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: GPTNeoXConfig) -> dict[str, tuple]:
    d, f = c.hidden_size, c.intermediate_size
    out = {"embed_in.weight": (c.vocab_size, d), "final_layer_norm.weight": (d,), "final_layer_norm.bias": (d,)}
    attention = {"attention.query_key_value": (3 * d, d), "attention.dense": (d, d)}
    mlp = {"mlp.dense_h_to_4h": (f, d), "mlp.dense_4h_to_h": (d, f)}  # the MLP always has biases
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in {**attention, **mlp}.items():
            out[p + f"{name}.weight"] = shape
            if c.attention_bias or name in mlp:
                out[p + f"{name}.bias"] = shape[:1]
        for name in ("input_layernorm", "post_attention_layernorm"):
            out[p + f"{name}.weight"] = out[p + f"{name}.bias"] = (d,)
    return out


# GPTNeoXForCausalLM's files name the head `embed_out` (transformers 5 renames it `lm_head` at run time
# and back when saving); tied to `embed_in` only when `tie_word_embeddings` says so.
_HEAD = causal_lm_head("GPTNeoXForCausalLM")
LM_HEAD = dataclasses.replace(
    _HEAD, apply=lambda params, c, hidden, inputs=None, *, rng=None: linear(params["embed_out"], hidden).astype("float32"),
    shapes=lambda c, n: {"embed_out.weight": (c.vocab_size, c.hidden_size)}, tied=("embed_out.weight",))

# Megatron-style: the fused q/k/v and dense_h_to_4h fan out (rows split; NeoX's per-head grouping keeps
# heads whole when the shards divide the heads), attention.dense and dense_4h_to_h fan in.
SHARDING = (
    (r"\.(query_key_value|dense_h_to_4h)\.weight$", ("model", None)),
    (r"\.(query_key_value|dense_h_to_4h)\.bias$", ("model",)),
    (r"\.(attention\.dense|dense_4h_to_h)\.weight$", (None, "model")),
    (r"\.(attention\.dense|dense_4h_to_h)\.bias$", ()),
    (r"(^|\.)(embed_in|embed_out)\.weight$", ("model", None)),
    (r"norm\.(weight|bias)$", ()),
)

FAMILIES = {
    "gpt_neox": Family(
        model_type="gpt_neox", config_class=GPTNeoXConfig, prefix="gpt_neox", base_architecture="GPTNeoXModel",
        forward=forward, shapes=shapes, ignored=IGNORED + (r"\.attention\.(bias|masked_bias)$",),
        heads={"causal_lm": LM_HEAD}, embeddings="embed_in", layers="layers", lora_targets=("query_key_value",),
        sharding=SHARDING,
        # 4 heads so the 2 x 4 test mesh splits the fused q/k/v at head boundaries, as on Pythia's 8-16 heads;
        # RoPE on 6 of 12 features. tests/decoder/test_classic_decoders.py covers the sequential block.
        recipe=tiny_recipe("GPTNeoXConfig", 23, num_attention_heads=4, num_key_value_heads=None, head_dim=None,
                           rms_norm_eps=None, layer_norm_eps=3e-5, hidden_act="gelu", use_parallel_residual=True,
                           rope_parameters=dict(rope_type="default", rope_theta=3300.0, partial_rotary_factor=0.5),
                           attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False),
    ),
}
