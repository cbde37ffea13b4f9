"""GPT-2: pre-norm decoder with learned positions, LayerNorm, a fused q/k/v projection and
Conv1D weights stored `[in, out]` (so every projection uses `layout="in_out"`).

    >>> from zoohub.backbones import get_family
    >>> family = get_family("gpt2")
    >>> family.weight_layout, family.learned_positions, family.max_length(family.config_class.from_hf({"vocab_size": 97}))
    ('in_out', True, 1024)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import GPT2Names, KVCache, causal_lm_head, layer_key, prepare, run_layers
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, causal_mask, dense_mlp, dropout, embedding, layer_norm, linear
from zoohub.layers.kv_cache import update_cache


@dataclass(frozen=True, kw_only=True)
class GPT2Config(GPT2Names, ModelConfig):
    """GPT-2 hyperparameters (transformers' names: n_embd, n_layer, n_head, n_positions).

    >>> config = GPT2Config.from_hf({"vocab_size": 97, "n_embd": 48, "n_head": 3, "n_ctx": 1024})
    >>> config.dim_per_head, config.n_layer
    (16, 12)
    """

    MODEL_TYPE = "gpt2"
    # reorder_and_upcast_attn: scores are always float32 here. n_ctx: a 4.x alias of n_positions. The
    # summary_* keys configure GPT2DoubleHeadsModel's multiple-choice head, which zoohub does not load.
    IGNORED = frozenset({"reorder_and_upcast_attn", "n_ctx", "summary_type", "summary_use_proj", "summary_activation",
                         "summary_proj_to_labels", "summary_first_dropout"})

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


def _scales(c: GPT2Config) -> np.ndarray:
    base = c.dim_per_head ** -0.5 if c.scale_attn_weights else 1.0
    div = np.arange(1, c.n_layer + 1) if c.scale_attn_by_inverse_layer_idx else np.ones(c.n_layer)
    return (base / div).astype(np.float32)


def forward(params, config: GPT2Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = key_valid & causal_mask(positions, key_positions)
    n, h = c.n_head, c.dim_per_head
    act = activation(c.activation_function)
    x = embedding(params["wte"], ids) + embedding(params["wpe"], positions)
    x = dropout(x, c.embd_pdrop, layer_key(rng, c.n_layer))  # a key no layer uses

    def block(p, x, info, kv):
        b, t, d = x.shape
        keys, index = KeyStream(layer_key(rng, info["index"])), info["cache_index"]
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

    x, cache = run_layers(block, params["h"], x, per_layer={"scale": _scales(c)}, cache=cache)
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


# Conv1D weights are [in, out], so the Megatron split is the transpose of the torch-Linear one.
SHARDING = (
    (r"\.(c_attn|c_fc)\.weight$", (None, "model")),
    (r"\.(c_attn|c_fc)\.bias$", ("model",)),
    (r"\.c_proj\.weight$", ("model", None)),
    (r"\.c_proj\.bias$", ()),
    (r"(^|\.)wte\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(^|\.)wpe\.weight$", ()),
    (r"(^|\.)ln_(1|2|f)\.(weight|bias)$", ()),
)

FAMILIES = {
    "gpt2": Family(
        model_type="gpt2", config_class=GPT2Config, prefix="transformer", base_architecture="GPT2Model",
        forward=forward, shapes=shapes, embeddings="wte", layers="h",
        ignored=(r"(^|\.)position_ids$", r"(^|\.)masked_bias$", r"\.attn\.bias$"),
        heads={"causal_lm": causal_lm_head("GPT2LMHeadModel", width=lambda c: c.n_embd)},
        max_length=lambda c: c.n_positions, learned_positions=True,
        weight_layout="in_out", lora_targets=("c_attn",), sharding=SHARDING,
        recipe=TinyRecipe(config="GPT2Config", seed=11, kwargs=dict(
            vocab_size=97, n_embd=48, n_layer=2, n_head=3, n_inner=80, n_positions=128, layer_norm_epsilon=3e-5,
            initializer_range=0.5, activation_function="gelu_new", scale_attn_by_inverse_layer_idx=True,
            bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    ),
}
