"""Phi (Phi-1, Phi-1.5, Phi-2): a decoder with a parallel block. One LayerNorm (with bias) feeds both
the attention and the MLP, and both outputs join the residual at once: x + attn(ln(x)) + mlp(ln(x)).

- Attention: biases on q/k/v and on the output projection (`dense`), optional per-head LayerNorms on
  q and k (`qk_layernorm`), RoPE on only the first `partial_rotary_factor` of each head's features.
- MLP: fc1 -> `hidden_act` (gelu_new, the tanh GELU) -> fc2, with biases.
- `final_layernorm`, then an untied `lm_head` that has a bias.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("phi")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.dim_per_head, config.rotary_dim()     # RoPE turns 6 of each head's 16 features
    (16, 6)
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
    IGNORED, SHARDING, DecoderConfig, KVCache, causal_lm_head, layer_key, masks_for, prepare,
    rope_checks, rope_tables, run_layers, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dense_mlp, dropout, embedding, layer_norm


@dataclass(frozen=True, kw_only=True)
class PhiConfig(DecoderConfig):
    """Phi hyperparameters (transformers' `PhiConfig` keys).

    Phi-2's config.json (transformers 4.x form: RoPE keys at the top level):

    >>> config = PhiConfig.from_hf({"vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240,
    ...     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    ...     "partial_rotary_factor": 0.4, "rope_theta": 10000.0, "rope_scaling": None, "qk_layernorm": False})
    >>> config.dim_per_head, config.rotary_dim(), config.rope()
    (80, 32, (10000.0, None))
    >>> import math     # PhiForCausalLM's parameters: backbone + untied lm_head with its bias
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    2779683840
    """

    MODEL_TYPE = "phi"
    CHECKS = rope_checks(partial_rotary=True)
    # transformers' PhiConfig falls back to this when neither `partial_rotary_factor` nor
    # `rope_parameters` gives one (Phi-1.5 and Phi-2 both state theirs).
    DEFAULT_PARTIAL_ROTARY_FACTOR: ClassVar[float] = 0.5

    max_position_embeddings: int = 2048
    rms_norm_eps: float | None = None         # not a Phi key (its norms are LayerNorms); None keeps it out of saves
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    qk_layernorm: bool = False
    partial_rotary_factor: float | None = None  # transformers 4.x form; 5.x writes it in `rope_parameters`
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    tie_word_embeddings: bool = False

    def attention_kinds(self) -> list[str]:
        # transformers' Phi builds a full causal mask whatever `sliding_window` / `layer_types` say
        return ["full_attention"] * self.num_hidden_layers

    def rotary_dim(self, kind: str = "full_attention") -> int:
        return self.partial_rotary_dim(kind, self.partial_rotary_factor, self.DEFAULT_PARTIAL_ROTARY_FACTOR)


def _attention_params(p, qk_layernorm: bool) -> dict:
    """Phi's attention names as `decoder.self_attention` reads them (references, no copies)."""
    out = {"q_proj": p["q_proj"], "k_proj": p["k_proj"], "v_proj": p["v_proj"], "o_proj": p["dense"]}
    if qk_layernorm:
        out.update(q_norm=p["q_layernorm"], k_norm=p["k_layernorm"])
    return out


def _block(c: PhiConfig, ctx: dict, rng):
    """The parallel decoder layer as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: layer_norm(p, x, eps=c.layer_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        keys = KeyStream(layer_key(rng, info["index"]))
        h = norm(p["input_layernorm"], x)
        a, kv = self_attention(_attention_params(p["self_attn"], c.qk_layernorm), h, config=c, rope=ctx["rope"],
                               mask=ctx["mask"], scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"],
                               qk_norm=norm if c.qk_layernorm else None)
        # transformers drops attention probabilities (attention_dropout); here, as in llama.py, the output
        a = dropout(a, c.attention_dropout, keys())
        m = dense_mlp(p["mlp"]["fc1"], p["mlp"]["fc2"], h, act=act)
        return x + dropout(a, c.resid_pdrop, keys()) + dropout(m, c.resid_pdrop, keys()), kv

    return block


def forward(params, config: PhiConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `final_layernorm`); with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids)
    x = dropout(x, config.embd_pdrop, layer_key(rng, config.num_hidden_layers))  # a key no layer uses
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, cache=cache)
    x = layer_norm(params["final_layernorm"], x, eps=config.layer_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: PhiConfig) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    q, kv = c.num_attention_heads * h, c.kv_heads * h
    out = {"embed_tokens.weight": (c.vocab_size, d), "final_layernorm.weight": (d,), "final_layernorm.bias": (d,)}
    linears = {"self_attn.q_proj": (q, d), "self_attn.k_proj": (kv, d), "self_attn.v_proj": (kv, d),
               "self_attn.dense": (d, q), "mlp.fc1": (f, d), "mlp.fc2": (d, f)}
    norms = {"input_layernorm": d}
    if c.qk_layernorm:
        norms.update({"self_attn.q_layernorm": h, "self_attn.k_layernorm": h})
    for i in range(c.num_hidden_layers):
        for name, shape in linears.items():  # every Phi Linear has a bias
            out[f"layers.{i}.{name}.weight"], out[f"layers.{i}.{name}.bias"] = shape, shape[:1]
        for name, width in norms.items():
            out[f"layers.{i}.{name}.weight"] = out[f"layers.{i}.{name}.bias"] = (width,)
    return out


_LM_HEAD = causal_lm_head("PhiForCausalLM")
# PhiForCausalLM's lm_head is a Linear with a bias; `decoder.lm_head` adds it when present.
LM_HEAD = dataclasses.replace(_LM_HEAD, shapes=lambda c, n: {**_LM_HEAD.shapes(c, n), "lm_head.bias": (c.vocab_size,)})

# Megatron-style like `decoder.SHARDING`, for Phi's own names: fc1 fans out, dense and fc2 fan in; the
# head's bias splits with its rows over the vocabulary.
PHI_SHARDING = (
    (r"\.fc1\.weight$", ("model", None)),
    (r"\.fc1\.bias$", ("model",)),
    (r"\.(dense|fc2)\.weight$", (None, "model")),
    (r"\.(dense|fc2)\.bias$", ()),
    (r"^lm_head\.bias$", ("model",)),
) + SHARDING

FAMILIES = {
    "phi": Family(
        model_type="phi", config_class=PhiConfig, prefix="model", base_architecture="PhiModel",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": LM_HEAD},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=PHI_SHARDING,
        # q/k LayerNorms on (Phi-1.5/2 have them off) so the test checkpoint covers them; RoPE on 6 of 16 features
        recipe=tiny_recipe("PhiConfig", 19, head_dim=None, rms_norm_eps=None, layer_norm_eps=3e-5, qk_layernorm=True,
                           rope_parameters=dict(rope_type="default", rope_theta=2000.0, partial_rotary_factor=0.4),
                           resid_pdrop=0.0, embd_pdrop=0.0, tie_word_embeddings=False),
    ),
}
