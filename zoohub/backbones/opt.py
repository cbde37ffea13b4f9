"""OPT (Meta's Open Pre-trained Transformers): a GPT-style decoder with learned positions, LayerNorm,
multi-head attention with biases and a ReLU MLP.

- Positions index a learned table with an offset of 2 (`embed_positions` has 2 extra rows), so
  position p reads row p + 2.
- `do_layer_norm_before`: pre-norm blocks (OPT-125m, 1.3b and up) or post-norm blocks (OPT-350m),
  whose decoder then has no final LayerNorm.
- `word_embed_proj_dim` < `hidden_size` (OPT-350m): token embeddings are narrower than the model;
  `project_in` widens them, `project_out` narrows the final hidden states for the tied head.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("opt")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.proj_dim, config.hidden_size            # the recipe narrows the embeddings, as OPT-350m does
    (40, 48)
    >>> params = init_params(family, config, seed=0)   # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape   # after project_out
    (1, 3, 40)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import KVCache, causal_lm_head, layer_key, prepare, run_layers
from zoohub.layers import KeyStream, activation, causal_mask, dense_mlp, dropout, embedding, layer_norm, linear
from zoohub.layers.qkv import cached_attention

POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding: fairseq reserved the first two rows
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default; OPT configs have no eps key


@dataclass(frozen=True, kw_only=True)
class OPTConfig(ModelConfig):
    """OPT hyperparameters (transformers' `OPTConfig` keys).

    OPT-350m's config.json (post-norm, 512-wide embeddings in a 1024-wide model):

    >>> config = OPTConfig.from_hf({"vocab_size": 50272, "hidden_size": 1024, "num_hidden_layers": 24,
    ...     "ffn_dim": 4096, "num_attention_heads": 16, "do_layer_norm_before": False, "word_embed_proj_dim": 512,
    ...     "activation_dropout": 0.0, "layerdrop": 0.0, "prefix": "</s>"})
    >>> config.dim_per_head, config.proj_dim, config.final_norm
    (64, 512, False)
    """

    MODEL_TYPE = "opt"
    # activation_dropout: fairseq's, written by 4.x configs; transformers' OPT never reads it.
    IGNORED = frozenset({"activation_dropout"})
    CHECKS = {
        "layerdrop": (lambda v: not v, "0 (no layers skipped in training)"),
        "layer_norm_elementwise_affine": (lambda v: v in (None, True), "true (LayerNorms with weight and bias)"),
    }

    vocab_size: int                          # V
    hidden_size: int = 768                   # D
    num_hidden_layers: int = 12              # L
    ffn_dim: int = 3072                      # F
    num_attention_heads: int = 12            # N
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int | None = None   # P (None: D): width of the token embeddings and the head
    do_layer_norm_before: bool = True        # pre-norm (True) or post-norm blocks
    _remove_final_layer_norm: bool = False   # a pre-norm decoder without its final LayerNorm
    activation_function: str = "relu"
    enable_bias: bool = True                 # biases on the attention and MLP projections
    dropout: float = 0.1                     # on each block's output
    attention_dropout: float = 0.0
    init_std: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")

    @property
    def kv_heads(self) -> int:
        return self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def proj_dim(self) -> int:
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def final_norm(self) -> bool:
        return self.do_layer_norm_before and not self._remove_final_layer_norm


def _attention(p, x, c: OPTConfig, *, mask, kv, index):
    b, t, _ = x.shape
    n, h = c.num_attention_heads, c.dim_per_head
    q, k, v = (linear(p[name], x).reshape(b, t, n, h) for name in ("q_proj", "k_proj", "v_proj"))
    out, kv = cached_attention(q, k, v, kv=kv, index=index, scale=h ** -0.5, mask=mask)
    return linear(p["out_proj"], out.reshape(b, t, n * h)), kv


def forward(params, config: OPTConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, P] (after the final norm and `project_out`); with `cache`, (hidden, cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = key_valid & causal_mask(positions, key_positions)
    norm = lambda p, x: layer_norm(p, x, eps=LAYER_NORM_EPS)  # noqa: E731
    act = activation(c.activation_function)
    decoder = params["decoder"]
    x = embedding(decoder["embed_tokens"], ids)
    if "project_in" in decoder:
        x = linear(decoder["project_in"], x)
    x = x + embedding(decoder["embed_positions"], positions + POSITION_OFFSET)

    def block(p, x, info, kv):
        keys, pre = KeyStream(layer_key(rng, info["index"])), c.do_layer_norm_before
        a, kv = _attention(p["self_attn"], norm(p["self_attn_layer_norm"], x) if pre else x, c, mask=mask, kv=kv,
                           index=info["cache_index"])
        # transformers drops attention probabilities (attention_dropout); here, as elsewhere, the output
        x = x + dropout(dropout(a, c.attention_dropout, keys()), c.dropout, keys())
        x = x if pre else norm(p["self_attn_layer_norm"], x)
        m = dense_mlp(p["fc1"], p["fc2"], norm(p["final_layer_norm"], x) if pre else x, act=act)
        x = x + dropout(m, c.dropout, keys())
        return (x if pre else norm(p["final_layer_norm"], x)), kv

    x, cache = run_layers(block, decoder["layers"], x, cache=cache)
    if c.final_norm:
        x = norm(decoder["final_layer_norm"], x)
    if "project_out" in decoder:
        x = linear(decoder["project_out"], x)
    return x if cache is None else (x, cache)


def shapes(c: OPTConfig) -> dict[str, tuple]:
    d, f, p = c.hidden_size, c.ffn_dim, c.proj_dim
    out = {"decoder.embed_tokens.weight": (c.vocab_size, p),
           "decoder.embed_positions.weight": (c.max_position_embeddings + POSITION_OFFSET, d)}
    if p != d:
        out.update({"decoder.project_in.weight": (d, p), "decoder.project_out.weight": (p, d)})
    if c.final_norm:
        out.update({"decoder.final_layer_norm.weight": (d,), "decoder.final_layer_norm.bias": (d,)})
    linears = {"self_attn.q_proj": (d, d), "self_attn.k_proj": (d, d), "self_attn.v_proj": (d, d),
               "self_attn.out_proj": (d, d), "fc1": (f, d), "fc2": (d, f)}
    for i in range(c.num_hidden_layers):
        prefix = f"decoder.layers.{i}."
        for name, shape in linears.items():
            out[prefix + name + ".weight"] = shape
            if c.enable_bias:
                out[prefix + name + ".bias"] = shape[:1]
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            out[prefix + name + ".weight"] = out[prefix + name + ".bias"] = (d,)
    return out


# Megatron-style over "model" for torch Linear weights [out, in]: q/k/v and fc1 split their output
# rows (whole heads when N divides by the axis), out_proj and fc2 their input columns.
SHARDING = (
    (r"\.(q_proj|k_proj|v_proj|fc1)\.weight$", ("model", None)),
    (r"\.(q_proj|k_proj|v_proj|fc1)\.bias$", ("model",)),
    (r"\.(out_proj|fc2)\.weight$", (None, "model")),
    (r"\.(out_proj|fc2)\.bias$", ()),
    (r"(^|\.)embed_tokens\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(^|\.)(embed_positions|project_in|project_out)\.weight$", ()),
    (r"layer_norm\.(weight|bias)$", ()),
)

FAMILIES = {
    "opt": Family(
        model_type="opt", config_class=OPTConfig, prefix="model", base_architecture="OPTModel",
        forward=forward, shapes=shapes, embeddings="decoder.embed_tokens", layers="decoder.layers",
        heads={"causal_lm": causal_lm_head("OPTForCausalLM", width=lambda c: c.proj_dim)},
        max_length=lambda c: c.max_position_embeddings, learned_positions=True,
        lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # pre-norm with OPT-350m's narrower embeddings (40 of 48); the post-norm block is in
        # tests/decoder/test_classic_variants.py
        recipe=TinyRecipe(config="OPTConfig", seed=21, kwargs=dict(
            vocab_size=97, hidden_size=48, num_hidden_layers=2, ffn_dim=80, num_attention_heads=3,
            max_position_embeddings=128, word_embed_proj_dim=40, do_layer_norm_before=True, init_std=0.3,
            dropout=0.0, attention_dropout=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    ),
}
