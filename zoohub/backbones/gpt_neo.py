"""GPT-Neo (125M, 1.3B, 2.7B): GPT-2's pre-norm layout with learned positions and torch Linear weights,
whose layers alternate global (full causal) and local attention (`attention_types`; a local layer
sees the `window_size` most recent tokens, itself included).

Two details differ from GPT-2: the attention scores are not scaled (GPT-Neo never divides q.k by
sqrt(head_dim), an artefact of the Mesh-TensorFlow original that its checkpoints are trained with),
and q/k/v have no biases while `out_proj` has one.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("gpt_neo")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.attention_kinds(), config.sliding_window
    (['full_attention', 'sliding_attention'], 4)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import (
    KVCache, causal_lm_head, is_sliding_array, layer_key, masks_for, prepare, run_layers, select,
)
from zoohub.layers import KeyStream, activation, dense_mlp, dropout, embedding, layer_norm, linear
from zoohub.layers.qkv import cached_attention

KINDS = {"global": "full_attention", "local": "sliding_attention"}


def _expand(attention_types) -> list[str]:
    """[[["global", "local"], 12]] -> ["global", "local"] * 12 (transformers' `expand_attention_types_params`)."""
    return [kind for pattern, repeat in attention_types for _ in range(repeat) for kind in pattern]


@dataclass(frozen=True, kw_only=True)
class GPTNeoConfig(ModelConfig):
    """GPT-Neo hyperparameters (transformers' `GPTNeoConfig` keys: num_layers, num_heads, window_size).

    GPT-Neo 125M's config.json:

    >>> config = GPTNeoConfig.from_hf({"vocab_size": 50257, "hidden_size": 768, "num_layers": 12, "num_heads": 12,
    ...     "attention_types": [[["global", "local"], 6]], "attention_layers": ["global", "local"] * 6,
    ...     "window_size": 256, "max_position_embeddings": 2048, "intermediate_size": None})
    >>> config.attention_kinds()[:3], config.dim_per_head
    (['full_attention', 'sliding_attention', 'full_attention'], 64)
    >>> import math     # GPTNeoForCausalLM's parameters (the lm_head is the embedding table)
    >>> sum(math.prod(s) for s in shapes(config).values())
    125198592
    """

    MODEL_TYPE = "gpt_neo"
    # attention_layers: transformers rebuilds it from `attention_types` and never reads the stored one.
    # classifier_dropout: only the classification heads read it; summary_*: a head zoohub does not load.
    IGNORED = frozenset({"attention_layers", "classifier_dropout", "summary_type", "summary_use_proj",
                         "summary_activation", "summary_proj_to_labels", "summary_first_dropout"})

    vocab_size: int                    # V
    hidden_size: int = 2048            # D
    num_layers: int = 24
    num_heads: int = 16                # N
    intermediate_size: int | None = None  # F (None: 4 D)
    max_position_embeddings: int = 2048
    attention_types: list | None = None   # [[[kind, ...], repeat], ...]; None: [[["global", "local"], 12]]
    window_size: int = 256
    activation_function: str = "gelu_new"  # the tanh GELU
    layer_norm_epsilon: float = 1e-5
    resid_dropout: float = 0.0
    embed_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_heads} heads")
        try:
            layers = _expand(self.attention_types or [[["global", "local"], 12]])
        except (TypeError, ValueError):
            raise ValueError(f"attention_types {self.attention_types!r} is not [[[kind, ...], repeat], ...]") from None
        if len(layers) != self.num_layers or not set(layers) <= set(KINDS):
            raise ValueError(f"attention_types gives {layers}, not {self.num_layers} of 'global' / 'local'")

    def attention_kinds(self) -> list[str]:
        return [KINDS[k] for k in _expand(self.attention_types or [[["global", "local"], 12]])]

    # names the shared masks and the generation code read for every family
    @property
    def sliding_window(self) -> int:
        return self.window_size

    @property
    def num_hidden_layers(self) -> int:
        return self.num_layers

    @property
    def kv_heads(self) -> int:
        return self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.hidden_size // self.num_heads


def forward(params, config: GPTNeoConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    masks = masks_for(c, positions, key_positions, key_valid)
    n, h = c.num_heads, c.dim_per_head
    act = activation(c.activation_function)
    x = embedding(params["wte"], ids) + embedding(params["wpe"], positions)
    x = dropout(x, c.embed_dropout, layer_key(rng, c.num_layers))  # a key no layer uses

    def block(p, x, info, kv):
        b, t, d = x.shape
        keys, attn = KeyStream(layer_key(rng, info["index"])), p["attn"]["attention"]
        y = layer_norm(p["ln_1"], x, eps=c.layer_norm_epsilon)
        q, k, v = (linear(attn[name], y).reshape(b, t, n, h) for name in ("q_proj", "k_proj", "v_proj"))
        a, kv = cached_attention(q, k, v, kv=kv, index=info["cache_index"], scale=1.0,  # unscaled, as trained
                                 mask=select(info["is_sliding"], masks))
        # transformers drops attention probabilities (attention_dropout); here the attention output instead
        a = dropout(linear(attn["out_proj"], dropout(a, c.attention_dropout, keys()).reshape(b, t, d)),
                    c.resid_dropout, keys())
        x = x + a
        m = dense_mlp(p["mlp"]["c_fc"], p["mlp"]["c_proj"], layer_norm(p["ln_2"], x, eps=c.layer_norm_epsilon), act=act)
        return x + dropout(m, c.resid_dropout, keys()), kv

    x, cache = run_layers(block, params["h"], x, per_layer={"is_sliding": is_sliding_array(c)}, cache=cache)
    x = layer_norm(params["ln_f"], x, eps=c.layer_norm_epsilon)
    return x if cache is None else (x, cache)


def shapes(c: GPTNeoConfig) -> dict[str, tuple]:
    d, f = c.hidden_size, c.intermediate_size or 4 * c.hidden_size
    out = {"wte.weight": (c.vocab_size, d), "wpe.weight": (c.max_position_embeddings, d),
           "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(c.num_layers):
        p = f"h.{i}."
        out.update({p + f"attn.attention.{name}.weight": (d, d) for name in ("q_proj", "k_proj", "v_proj", "out_proj")})
        out.update({p + "attn.attention.out_proj.bias": (d,),
                    p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                    p + "mlp.c_fc.weight": (f, d), p + "mlp.c_fc.bias": (f,),
                    p + "mlp.c_proj.weight": (d, f), p + "mlp.c_proj.bias": (d,)})
    return out


# Megatron-style for torch Linear weights [out, in] (GPT-Neo's MLP is not GPT-2's Conv1D): q/k/v and
# c_fc fan out, out_proj and c_proj fan in; the token table splits over the vocabulary.
SHARDING = (
    (r"\.(q_proj|k_proj|v_proj|c_fc)\.weight$", ("model", None)),
    (r"\.c_fc\.bias$", ("model",)),
    (r"\.(out_proj|c_proj)\.weight$", (None, "model")),
    (r"\.(out_proj|c_proj)\.bias$", ()),
    (r"(^|\.)wte\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(^|\.)wpe\.weight$", ()),
    (r"(^|\.)ln_(1|2|f)\.(weight|bias)$", ()),
)

FAMILIES = {
    "gpt_neo": Family(
        model_type="gpt_neo", config_class=GPTNeoConfig, prefix="transformer", base_architecture="GPTNeoModel",
        forward=forward, shapes=shapes, embeddings="wte", layers="h",
        ignored=(r"(^|\.)position_ids$", r"\.attn\.attention\.(bias|masked_bias)$"),
        heads={"causal_lm": causal_lm_head("GPTNeoForCausalLM")},
        max_length=lambda c: c.max_position_embeddings, learned_positions=True,
        lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # a local window of 4, shorter than the test prompts (up to 11 tokens, plus 20 generated); init 0.3,
        # not 0.5: unscaled scores at 0.5 saturate the softmax, where float32 rounding nears the 1e-4 tolerance
        recipe=TinyRecipe(config="GPTNeoConfig", seed=25, kwargs=dict(
            vocab_size=97, hidden_size=48, num_layers=2, num_heads=3, intermediate_size=80, max_position_embeddings=128,
            attention_types=[[["global", "local"], 1]], window_size=4, layer_norm_epsilon=3e-5, initializer_range=0.3,
            activation_function="gelu_new", bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_dropout=0.0,
            embed_dropout=0.0, attention_dropout=0.0)),
    ),
}
