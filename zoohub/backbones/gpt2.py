"""GPT-2: pre-norm decoder with learned positions, LayerNorm, a fused q/k/v projection and
Conv1D weights stored `[in, out]` (so every projection uses `layout="in_out"`).

    >>> from zoohub.backbones import get_family
    >>> get_family("gpt2").heads["causal_lm"].architecture
    'GPT2LMHeadModel'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family, ModelConfig
from zoohub.backbones.decoder import prepare, run_layers
from zoohub.backbones.llama import causal_lm_head
from zoohub.backend import ops
from zoohub.layers import (
    KeyStream, activation, attention, causal_mask, dense_mlp, dropout, embedding, get_path, layer_norm, linear,
)
from zoohub.layers.kv_cache import update_cache


@dataclass(frozen=True, kw_only=True)
class GPT2Config(ModelConfig):
    """GPT-2 hyperparameters (transformers' names: n_embd, n_layer, n_head, n_positions).

    >>> GPT2Config.MODEL_TYPE
    'gpt2'
    """

    MODEL_TYPE = "gpt2"
    CHECKS = {
        "add_cross_attention": (lambda v: not v, "False (decoder only)"),
        "reorder_and_upcast_attn": (lambda v: True, "any (scores are always float32 here)"),
    }

    vocab_size: int                    # V
    n_embd: int = 768                  # D
    n_layer: int = 12
    n_head: int = 12                   # N
    n_inner: int | None = None         # F (None: 4 D)
    n_positions: int = 1024
    activation_function: str = "gelu_new"  # the tanh GELU
    layer_norm_epsilon: float = 1e-5
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by {self.n_head} heads")

    # names the generation code reads for every family
    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def kv_heads(self) -> int:
        return self.n_head

    @property
    def dim_per_head(self) -> int:
        return self.n_embd // self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions


def _scales(c: GPT2Config) -> np.ndarray:
    base = c.dim_per_head ** -0.5 if c.scale_attn_weights else 1.0
    div = np.arange(1, c.n_layer + 1) if c.scale_attn_by_inverse_layer_idx else np.ones(c.n_layer)
    return (base / div).astype(np.float32)


def forward(params, config: GPT2Config, inputs, *, rng=None, cache=None, stacked: bool = False):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c, keys = config, KeyStream(rng)
    ids, positions, key_positions, key_valid = prepare(inputs)
    mask = key_valid & causal_mask(positions, key_positions)
    index = inputs.get("cache_index")
    n, h = c.n_head, c.dim_per_head
    act = activation(c.activation_function)
    x = embedding(params["wte"], ids) + embedding(params["wpe"], positions)
    x = dropout(x, c.embd_pdrop, keys())

    def block(p, x, info, kv):
        b, t, d = x.shape
        qkv = linear(p["attn"]["c_attn"], layer_norm(p["ln_1"], x, eps=c.layer_norm_epsilon), layout="in_out")
        q, k, v = (part.reshape(b, t, n, h) for part in ops().xp.split(qkv, 3, axis=-1))
        if kv is not None:
            kv = (update_cache(kv[0], k, index), update_cache(kv[1], v, index))
            k, v = kv
        # transformers drops attention probabilities (attn_pdrop); here the attention output instead.
        a = dropout(attention(q, k, v, scale=info["scale"], mask=mask), c.attn_pdrop, keys())
        x = x + dropout(linear(p["attn"]["c_proj"], a.reshape(b, t, d), layout="in_out"), c.resid_pdrop, keys())
        m = dense_mlp(p["mlp"]["c_fc"], p["mlp"]["c_proj"], layer_norm(p["ln_2"], x, eps=c.layer_norm_epsilon),
                      act=act, layout="in_out")
        return x + dropout(m, c.resid_pdrop, keys()), kv

    x, cache = run_layers(block, params["h"], x, per_layer={"scale": _scales(c)}, cache=cache, stacked=stacked)
    x = layer_norm(params["ln_f"], x, eps=c.layer_norm_epsilon)
    return x if cache is None else (x, cache)


def shapes(c: GPT2Config) -> dict[str, tuple]:
    d, f = c.n_embd, c.n_inner or 4 * c.n_embd
    out = {"wte.weight": (c.vocab_size, d), "wpe.weight": (c.n_positions, d),
           "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(c.n_layer):
        p = f"h.{i}."
        out.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "mlp.c_fc.weight": (d, f), p + "mlp.c_fc.bias": (f,),
            p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,),
        })
    return out


def lm_head(params, c: GPT2Config, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32 from `lm_head.weight` or the tied `wte`."""
    w = get_path(params, "lm_head.weight")
    if w is None:
        w = params["transformer"]["wte"]["weight"]
    return linear({"weight": w}, hidden).astype("float32")


FAMILIES = {
    "gpt2": Family(
        model_type="gpt2", config_class=GPT2Config, prefix="transformer", base_architecture="GPT2Model",
        forward=forward, shapes=shapes,
        heads={"causal_lm": causal_lm_head("GPT2LMHeadModel", apply=lm_head, embeddings="transformer.wte.weight",
                                           width=lambda c: c.n_embd)},
        max_length=lambda c: c.n_positions,
    ),
}
