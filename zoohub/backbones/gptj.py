"""GPT-J (GPT-J-6B and its fine-tunes): a parallel block with one LayerNorm, x + attn(ln(x)) + mlp(ln(x)),
no biases on q/k/v/out, a GELU MLP (`fc_in`/`fc_out`, with biases) and an untied `lm_head` with a bias.

Its RoPE is GPT-J's own: interleaved pairs (`rotate_every_two`: features 2i and 2i+1 turn together by
frequency i), on the first `rotary_dim` features of each head, base 10000. transformers' Llama-style
RoPE turns feature i with feature i + R/2 instead; the two are not interchangeable.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("gptj")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.dim_per_head, config.rotary_dim
    (16, 6)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import GPT2Names, KVCache, causal_lm_head, layer_key, prepare, run_layers, self_attention
from zoohub.layers import (
    KeyStream, activation, causal_mask, dense_mlp, dropout, embedding, layer_norm, rope_cos_sin, rope_frequencies,
)

ROPE_BASE = 10000.0  # fixed in transformers' GPT-J (`create_sinusoidal_positions`); no config key sets it


@dataclass(frozen=True, kw_only=True)
class GPTJConfig(GPT2Names, ModelConfig):
    """GPT-J hyperparameters (transformers' names: n_embd, n_layer, n_head, n_positions).

    GPT-J-6B's config.json:

    >>> config = GPTJConfig.from_hf({"vocab_size": 50400, "n_embd": 4096, "n_layer": 28, "n_head": 16,
    ...     "n_positions": 2048, "rotary_dim": 64, "rotary": True, "scale_attn_weights": True, "n_inner": None,
    ...     "summary_type": "cls_index", "tie_word_embeddings": False})
    >>> config.dim_per_head, config.rotary_dim
    (256, 64)
    >>> import math     # GPTJForCausalLM's parameters: backbone + lm_head with its bias
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    6050882784
    """

    MODEL_TYPE = "gptj"
    # rotary, scale_attn_weights: written by GPT-J-6B's export, never read by transformers (it always
    # rotates and scales). The summary_* keys configure a multiple-choice head zoohub does not load.
    IGNORED = frozenset({"rotary", "scale_attn_weights", "summary_type", "summary_use_proj", "summary_activation",
                         "summary_proj_to_labels", "summary_first_dropout", "n_ctx"})

    vocab_size: int                    # V
    n_embd: int = 4096                 # D
    n_layer: int = 28
    n_head: int = 16                   # N
    n_inner: int | None = None         # F (None: 4 D)
    n_positions: int = 2048
    rotary_dim: int = 64               # R: leading features of each head that RoPE turns
    activation_function: str = "gelu_new"  # the tanh GELU
    layer_norm_epsilon: float = 1e-5
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by {self.n_head} heads")
        if not 0 < self.rotary_dim <= self.dim_per_head or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and in (0, {self.dim_per_head}]")


def forward(params, config: GPTJConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = key_valid & causal_mask(positions, key_positions)
    rope = rope_cos_sin(positions, rope_frequencies(c.rotary_dim, ROPE_BASE)[0], interleaved=True)
    act = activation(c.activation_function)
    x = embedding(params["wte"], ids)
    x = dropout(x, c.embd_pdrop, layer_key(rng, c.n_layer))  # a key no layer uses

    def block(p, x, info, kv):
        keys, attn = KeyStream(layer_key(rng, info["index"])), p["attn"]
        h = layer_norm(p["ln_1"], x, eps=c.layer_norm_epsilon)
        a, kv = self_attention({**attn, "o_proj": attn["out_proj"]}, h, config=c, rope=rope, mask=mask,
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"], interleaved=True)
        # transformers drops attention probabilities (attn_pdrop); here the attention output instead
        a = dropout(dropout(a, c.attn_pdrop, keys()), c.resid_pdrop, keys())
        m = dense_mlp(p["mlp"]["fc_in"], p["mlp"]["fc_out"], h, act=act)
        return x + a + dropout(m, c.resid_pdrop, keys()), kv

    x, cache = run_layers(block, params["h"], x, cache=cache)
    x = layer_norm(params["ln_f"], x, eps=c.layer_norm_epsilon)
    return x if cache is None else (x, cache)


def shapes(c: GPTJConfig) -> dict[str, tuple]:
    d, f = c.n_embd, c.n_inner or 4 * c.n_embd
    out = {"wte.weight": (c.vocab_size, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(c.n_layer):
        p = f"h.{i}."
        out.update({p + f"attn.{name}.weight": (d, d) for name in ("q_proj", "k_proj", "v_proj", "out_proj")})
        out.update({p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
                    p + "mlp.fc_in.weight": (f, d), p + "mlp.fc_in.bias": (f,),
                    p + "mlp.fc_out.weight": (d, f), p + "mlp.fc_out.bias": (d,)})
    return out


_LM_HEAD = causal_lm_head("GPTJForCausalLM", width=lambda c: c.n_embd)
# GPTJForCausalLM's lm_head is a Linear with a bias; `decoder.lm_head` adds it when present.
LM_HEAD = dataclasses.replace(_LM_HEAD, shapes=lambda c, n: {**_LM_HEAD.shapes(c, n), "lm_head.bias": (c.vocab_size,)})

# Megatron-style for torch Linear weights [out, in]: q/k/v and fc_in fan out, out_proj and fc_out fan
# in; the embedding table and the head (with its bias) split over the vocabulary.
SHARDING = (
    (r"\.(q_proj|k_proj|v_proj|fc_in)\.weight$", ("model", None)),
    (r"\.fc_in\.bias$", ("model",)),
    (r"\.(out_proj|fc_out)\.weight$", (None, "model")),
    (r"\.fc_out\.bias$", ()),
    (r"(^|\.)wte\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"^lm_head\.bias$", ("model",)),
    (r"(^|\.)ln_(1|f)\.(weight|bias)$", ()),
)

FAMILIES = {
    "gptj": Family(
        model_type="gptj", config_class=GPTJConfig, prefix="transformer", base_architecture="GPTJModel",
        forward=forward, shapes=shapes, embeddings="wte", layers="h",
        ignored=(r"(^|\.)position_ids$", r"\.attn\.(bias|masked_bias)$", r"(^|\.)embed_positions$"),
        heads={"causal_lm": LM_HEAD}, lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # RoPE on 6 of 16 features, so both the interleaved pairs and the pass-through part are exercised
        recipe=TinyRecipe(config="GPTJConfig", seed=24, kwargs=dict(
            vocab_size=97, n_embd=48, n_layer=2, n_head=3, n_inner=80, n_positions=128, rotary_dim=6,
            layer_norm_epsilon=3e-5, initializer_range=0.5, activation_function="gelu_new", tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    ),
}
