"""GPT-BigCode (SantaCoder, StarCoder): GPT-2's block with multi-query attention.

- Learned positions (`wpe`), pre-norm LayerNorms, a tanh-GELU MLP, biases everywhere, a tied head.
- One fused `c_attn` projection: with `multi_query` all query heads, then one key head and one
  value head ([q; k; v], D + 2 H rows); without it, per-head [q, k, v] interleaved. Both are the
  grouped layout of `layers.qkv.split_qkv`.
- Unlike GPT-2 the projections are torch Linear weights `[out, in]`, not Conv1D.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("gpt_bigcode")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.kv_heads, family.weight_layout
    (1, 'out_in')
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import KVCache, causal_lm_head, layer_key, prepare, run_layers
from zoohub.layers import KeyStream, activation, causal_mask, dense_mlp, dropout, embedding, layer_norm, linear
from zoohub.layers.qkv import cached_attention, split_qkv


@dataclass(frozen=True, kw_only=True)
class GPTBigCodeConfig(ModelConfig):
    """GPT-BigCode hyperparameters (transformers' `GPTBigCodeConfig` keys: n_embd, n_layer, n_head...).

    bigcode/starcoderbase-1b's config.json carries the BigCode fork's inference-runner settings:

    >>> config = GPTBigCodeConfig.from_hf({"vocab_size": 49152, "n_embd": 2048, "n_layer": 24, "n_head": 16,
    ...     "n_inner": 8192, "n_positions": 8192, "multi_query": True, "inference_runner": 0,
    ...     "validate_runner_input": True, "max_batch_size": None, "summary_type": "cls_index"})
    >>> config.kv_heads, config.dim_per_head, config.num_hidden_layers
    (1, 128, 24)
    """

    MODEL_TYPE = "gpt_bigcode"
    # transformers' GPT-BigCode never reads these: the softmax dtype switches (its softmax is float32, as
    # here), the derived num_key_value_heads (recomputed from multi_query), the BigCode fork's inference
    # runner options, and the summary_* keys of GPT-2's multiple-choice head.
    IGNORED = frozenset({
        "attention_softmax_in_fp32", "scale_attention_softmax_in_fp32", "num_key_value_heads", "n_ctx",
        "inference_runner", "validate_runner_input", "pre_allocate_kv_cache", "pad_key_length", "max_batch_size",
        "max_sequence_length", "runner_max_sequence_length", "summary_type", "summary_use_proj",
        "summary_activation", "summary_proj_to_labels", "summary_first_dropout"})

    vocab_size: int                    # V
    n_embd: int = 768                  # D
    n_layer: int = 12
    n_head: int = 12                   # N
    n_inner: int | None = None         # F (None: 4 D)
    n_positions: int = 1024
    multi_query: bool = True           # one key/value head
    activation_function: str = "gelu_pytorch_tanh"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    initializer_range: float = 0.02
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
        return 1 if self.multi_query else self.n_head

    @property
    def dim_per_head(self) -> int:
        return self.n_embd // self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions


def forward(params, config: GPTBigCodeConfig, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D] (after `ln_f`); with `cache`, (hidden, updated cache)."""
    c = config
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    mask = key_valid & causal_mask(positions, key_positions)
    h, norm = c.dim_per_head, (lambda p, x: layer_norm(p, x, eps=c.layer_norm_epsilon))
    scale, act = (h ** -0.5 if c.scale_attn_weights else 1.0), activation(c.activation_function)
    x = embedding(params["wte"], ids) + embedding(params["wpe"], positions)
    x = dropout(x, c.embd_pdrop, layer_key(rng, c.n_layer))  # a key no layer uses

    def block(p, x, info, kv):
        b, t, d = x.shape
        keys = KeyStream(layer_key(rng, info["index"]))
        q, k, v = split_qkv(linear(p["attn"]["c_attn"], norm(p["ln_1"], x)), num_kv_heads=c.kv_heads, head_dim=h)
        a, kv = cached_attention(q, k, v, kv=kv, index=info["cache_index"], scale=scale, mask=mask)
        # transformers drops attention probabilities (attn_pdrop); here the attention output instead
        a = linear(p["attn"]["c_proj"], dropout(a, c.attn_pdrop, keys()).reshape(b, t, d))
        x = x + dropout(a, c.resid_pdrop, keys())
        m = dense_mlp(p["mlp"]["c_fc"], p["mlp"]["c_proj"], norm(p["ln_2"], x), act=act)
        return x + dropout(m, c.resid_pdrop, keys()), kv

    x, cache = run_layers(block, params["h"], x, cache=cache)
    x = norm(params["ln_f"], x)
    return x if cache is None else (x, cache)


def shapes(c: GPTBigCodeConfig) -> dict[str, tuple]:
    d, f, h = c.n_embd, c.n_inner or 4 * c.n_embd, c.dim_per_head
    out = {"wte.weight": (c.vocab_size, d), "wpe.weight": (c.n_positions, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    linears = {"attn.c_attn": (d + 2 * c.kv_heads * h, d), "attn.c_proj": (d, d), "mlp.c_fc": (f, d),
               "mlp.c_proj": (d, f)}
    for i in range(c.n_layer):
        for name, shape in linears.items():
            out[f"h.{i}.{name}.weight"], out[f"h.{i}.{name}.bias"] = shape, shape[:1]
        for name in ("ln_1", "ln_2"):
            out[f"h.{i}.{name}.weight"] = out[f"h.{i}.{name}.bias"] = (d,)
    return out


# Tensor parallelism over "model" for torch Linear weights [out, in]. With one kv head the fused
# c_attn cannot split by heads (its rows are D query rows, then H key and H value rows that every
# head needs), so it splits its input columns instead: each device computes a partial q/k/v from
# its slice of the features and one all-reduce sums them; attention then runs whole on each device.
# The MLP is Megatron's: c_fc rows, c_proj (MLP and attention) input columns.
SHARDING = (
    (r"\.attn\.c_attn\.weight$", (None, "model")),
    (r"\.attn\.c_attn\.bias$", ()),
    (r"\.mlp\.c_fc\.weight$", ("model", None)),
    (r"\.mlp\.c_fc\.bias$", ("model",)),
    (r"\.c_proj\.weight$", (None, "model")),
    (r"\.c_proj\.bias$", ()),
    (r"(^|\.)wte\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(^|\.)wpe\.weight$", ()),
    (r"(^|\.)ln_(1|2|f)\.(weight|bias)$", ()),
)

FAMILIES = {
    "gpt_bigcode": Family(
        model_type="gpt_bigcode", config_class=GPTBigCodeConfig, prefix="transformer",
        base_architecture="GPTBigCodeModel", forward=forward, shapes=shapes, embeddings="wte", layers="h",
        ignored=(r"(^|\.)position_ids$", r"^(transformer\.)?bias$"),  # the causal-mask buffer
        heads={"causal_lm": causal_lm_head("GPTBigCodeForCausalLM", width=lambda c: c.n_embd)},
        max_length=lambda c: c.n_positions, learned_positions=True,
        lora_targets=("c_attn",), sharding=SHARDING,
        recipe=TinyRecipe(config="GPTBigCodeConfig", seed=24, kwargs=dict(
            vocab_size=97, n_embd=48, n_layer=2, n_head=3, n_inner=80, n_positions=128, layer_norm_epsilon=3e-5,
            initializer_range=0.5, activation_function="gelu_pytorch_tanh", multi_query=True,
            bos_token_id=1, eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    ),
}
