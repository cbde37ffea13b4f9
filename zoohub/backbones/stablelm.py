"""StableLM (StableLM-3B-4E1T, StableLM 2 1.6B/12B, StableCode): a Llama-shaped decoder with LayerNorms
(with bias) instead of RMSNorms, RoPE on the first `partial_rotary_factor` of each head's features and
a SwiGLU MLP. Three switches, each read from the config:

- `use_qkv_bias`: biases on q/k/v (StableLM 2 1.6B), never on `o_proj`.
- `qk_layernorm`: a LayerNorm (no bias) of its own for every head, on q and on k, before RoPE
  (StableLM 2 12B); the checkpoint holds one weight per head (`q_layernorm.norms.{h}.weight`).
- `use_parallel_residual`: one LayerNorm feeds attention and MLP, x + attn(ln(x)) + mlp(ln(x))
  (StableLM 2 12B); otherwise the usual two-norm sequential block.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("stablelm")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.dim_per_head, config.rotary_dim(), config.qk_layernorm, config.use_parallel_residual
    (16, 6, True, True)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare, rope_checks,
    rope_tables, run_layers, self_attention, tiny_recipe,
)
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, layer_norm


@dataclass(frozen=True, kw_only=True)
class StableLmConfig(DecoderConfig):
    """StableLM hyperparameters (transformers' `StableLmConfig` keys).

    StableLM 2 1.6B's config.json (transformers 4.x form: RoPE keys at the top level):

    >>> config = StableLmConfig.from_hf({"vocab_size": 100352, "hidden_size": 2048, "intermediate_size": 5632,
    ...     "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32, "rope_theta": 10000,
    ...     "partial_rotary_factor": 0.25, "use_qkv_bias": True, "qk_layernorm": False,
    ...     "use_parallel_residual": False, "layer_norm_eps": 1e-05, "tie_word_embeddings": False})
    >>> config.dim_per_head, config.rotary_dim(), config.rope()
    (64, 16, (10000.0, None))
    >>> import math     # StableLmForCausalLM's parameters: backbone + untied lm_head
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    1644515328
    """

    MODEL_TYPE = "stablelm"
    CHECKS = rope_checks(partial_rotary=True)
    # transformers' StableLmConfig falls back to this when neither `partial_rotary_factor` nor
    # `rope_parameters` gives one.
    DEFAULT_PARTIAL_ROTARY_FACTOR: ClassVar[float] = 0.25

    num_key_value_heads: int | None = 32      # transformers' default (not "equal to the heads")
    max_position_embeddings: int = 4096
    rms_norm_eps: float | None = None         # not a StableLM key (its norms are LayerNorms)
    layer_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    qk_layernorm: bool = False
    use_parallel_residual: bool = False
    hidden_dropout: float = 0.0
    partial_rotary_factor: float | None = None  # transformers 4.x form; 5.x writes it in `rope_parameters`
    tie_word_embeddings: bool = False

    def attention_kinds(self) -> list[str]:
        # transformers' StableLM builds a full causal mask whatever `sliding_window` / `layer_types` say
        return ["full_attention"] * self.num_hidden_layers

    def rotary_dim(self, kind: str = "full_attention") -> int:
        return self.partial_rotary_dim(kind, self.partial_rotary_factor, self.DEFAULT_PARTIAL_ROTARY_FACTOR)


def _per_head_norm(norms, heads: int) -> dict:
    """The per-head LayerNorms (`norms.{h}.weight` [H] each) as one weight [N, H] that broadcasts over
    [B, T, N, H], so `layer_norm` normalises every head by its own scales."""
    return {"weight": ops().xp.stack([norms[str(h)]["weight"] for h in range(heads)])}


def _attention_params(p, c: StableLmConfig) -> dict:
    if not c.qk_layernorm:
        return p
    return {**p, "q_norm": _per_head_norm(p["q_layernorm"]["norms"], c.num_attention_heads),
            "k_norm": _per_head_norm(p["k_layernorm"]["norms"], c.kv_heads)}


def _block(c: StableLmConfig, ctx: dict, rng):
    """The decoder layer (parallel or sequential) as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def mlp(m, h):
        return gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], h, act=act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        h = norm(p["input_layernorm"], x)
        a, kv = self_attention(_attention_params(p["self_attn"], c), h, config=c, rope=ctx["rope"], mask=ctx["mask"],
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"],
                               qk_norm=norm if c.qk_layernorm else None)
        # transformers drops attention probabilities (attention_dropout); here, as in llama.py, the output
        a = dropout(a, c.attention_dropout, keys())
        if c.use_parallel_residual:
            return x + a + dropout(mlp(p["mlp"], h), c.hidden_dropout, keys()), kv
        x = x + a
        return x + dropout(mlp(p["mlp"], norm(p["post_attention_layernorm"], x)), c.hidden_dropout, keys()), kv

    return block


def forward(params, config: StableLmConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `norm`); with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids)
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = layer_norm(params["norm"], x, eps=config.layer_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: StableLmConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    q, kv = c.num_attention_heads * h, c.kv_heads * h
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for name, shape in {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d)}.items():
            out[p + f"self_attn.{name}.weight"] = shape
            if c.use_qkv_bias:
                out[p + f"self_attn.{name}.bias"] = shape[:1]
        out[p + "self_attn.o_proj.weight"] = (d, q)
        if c.qk_layernorm:
            for which, heads in (("q", c.num_attention_heads), ("k", c.kv_heads)):
                out.update({p + f"self_attn.{which}_layernorm.norms.{j}.weight": (h,) for j in range(heads)})
        out.update({p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f)})
        norms = ["input_layernorm"] if c.use_parallel_residual else ["input_layernorm", "post_attention_layernorm"]
        for name in norms:
            out[p + f"{name}.weight"] = out[p + f"{name}.bias"] = (d,)
    return out


LM_HEAD = causal_lm_head("StableLmForCausalLM")

FAMILIES = {
    "stablelm": Family(
        model_type="stablelm", config_class=StableLmConfig, prefix="model", base_architecture="StableLmModel",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": LM_HEAD},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"),
        # the per-head q/k norm weights replicate like every norm
        sharding=((r"\.norms\.\d+\.weight$", ()),) + SHARDING,
        # every switch on (StableLM 2 12B's layout, plus 1.6B's q/k/v biases); RoPE on 6 of 16 features.
        # tests/decoder/test_classic_decoders.py covers the sequential block without q/k norms.
        recipe=tiny_recipe("StableLmConfig", 21, head_dim=None, rms_norm_eps=None, layer_norm_eps=3e-5,
                           qk_layernorm=True, use_parallel_residual=True, use_qkv_bias=True,
                           rope_parameters=dict(rope_type="default", rope_theta=1700.0, partial_rotary_factor=0.375),
                           hidden_dropout=0.0, tie_word_embeddings=False),
    ),
}
