"""T5, Flan-T5 (T5 v1.1) and mT5: encoder-decoder Transformers with relative position buckets.

Pre-norm blocks with T5's layer norm (RMS, no mean, no bias), attention without the 1/sqrt(H) scaling
and with a learned bias per (relative-position bucket, head) that only the first block of each stack
holds and every block reuses: bidirectional buckets in the encoder, causal ones in the decoder.
v1.0 uses a ReLU MLP and a tied head that scales the decoder output by d_model**-0.5; v1.1 / Flan-T5
and mT5 use gated GELU (`feed_forward_proj="gated-gelu"`) and an untied `lm_head`.

T5 checkpoints have no backbone prefix (`shared.weight`, `encoder.block.0...`, `lm_head.weight`).

    >>> from zoohub.backbones import get_family
    >>> family = get_family("t5")
    >>> family.prefix, family.is_encoder_decoder, family.heads["seq2seq_lm"].architecture
    ('', True, 'T5ForConditionalGeneration')
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import KVCache, prepare
from zoohub.backbones.seq2seq import write_layer
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, causal_mask, dropout, embedding, linear, padding_mask, rms_norm


@dataclass(frozen=True, kw_only=True)
class T5Config(ModelConfig):
    """T5 hyperparameters; fields are `T5Config` keys of transformers.

    >>> config = T5Config.from_hf({"vocab_size": 97, "d_model": 48, "d_kv": 16, "d_ff": 80, "num_layers": 2,
    ...     "num_heads": 3, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False})
    >>> config.cache_layers, config.is_gated, config.act_name, config.scales_decoder_output
    (2, True, 'gelu_new', False)
    """

    MODEL_TYPE = "t5"
    CHECKS = {
        "is_encoder_decoder": (lambda v: v in (None, True), "true"),
        "is_decoder": (lambda v: not v, "false (the encoder-decoder model)"),
    }
    # Derived from feed_forward_proj by transformers, whatever the file says; n_positions is unused by the math.
    IGNORED = frozenset({"dense_act_fn", "is_gated_act", "n_positions", "classifier_dropout"})

    vocab_size: int                        # V
    d_model: int                           # D
    d_kv: int                              # H
    d_ff: int                              # F
    num_layers: int                        # encoder layers
    num_heads: int                         # N
    num_decoder_layers: int | None = None  # None: num_layers
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"        # "relu", "gelu", "gated-gelu", "gated-silu"...
    scale_decoder_outputs: bool | None = None
    """transformers 5 writes this (and tie_word_embeddings=true always); None: scale iff tied (4.x files)."""

    def __post_init__(self):
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} is not 'ACT' or 'gated-ACT'")
        activation(self.act_name)  # unknown activations are refused by name here

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act_name(self) -> str:
        # transformers maps "gated-gelu" to the tanh GELU for backward compatibility, other names as written.
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    @property
    def scales_decoder_output(self) -> bool:
        """v1.0's tied head multiplies the decoder output by d_model**-0.5."""
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs

    # the names shared code reads (generation's cache shape, LoRA, training)
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def cache_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def kv_heads(self) -> int:
        return self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.d_kv


@dataclass(frozen=True, kw_only=True)
class MT5Config(T5Config):
    """mT5: T5 v1.1 math with a multilingual vocabulary."""

    MODEL_TYPE = "mt5"
    feed_forward_proj: str = "gated-gelu"

    @property
    def scales_decoder_output(self) -> bool:
        return False  # MT5ForConditionalGeneration never rescales, tied or not (mT5 checkpoints are untied)


# ---- relative position buckets ----------------------------------------------------------------------

@functools.cache
def _bucket_table(num_buckets: int, max_distance: int, bidirectional: bool) -> np.ndarray:
    """Bucket of every relative position in [-max_distance, max_distance] (index + max_distance), computed
    in float32 as transformers does (its log-spaced boundaries fall on exact integers: 16, 32, 64...);
    positions farther away share the outermost buckets."""
    rel = np.arange(-max_distance, max_distance + 1)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    ratio = np.maximum(rel, 1).astype(np.float32) / np.float32(max_exact)
    large = max_exact + (np.log(ratio) / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact)).astype(np.int64)
    buckets += np.where(rel < max_exact, rel, np.minimum(large, num_buckets - 1))
    return buckets.astype(np.int32)


def position_bias(table_params, config: T5Config, query_positions, key_positions, *, bidirectional: bool):
    """Learned bias float32 [B|1, N, T, S] for query positions [B|1, T] and key positions [B|1, S]."""
    xp = ops().xp
    d = config.relative_attention_max_distance
    lookup = xp.asarray(_bucket_table(config.relative_attention_num_buckets, d, bidirectional))
    rel = xp.clip(key_positions[:, None, :] - query_positions[:, :, None], -d, d) + d  # [B, T, S]
    values = embedding(table_params, xp.take(lookup, rel, axis=0))                      # [B, T, S, N]
    return values.astype(xp.float32).transpose(0, 3, 1, 2)


# ---- blocks -----------------------------------------------------------------------------------------

def _norm(p, x, config: T5Config):
    return rms_norm(p, x, eps=config.layer_norm_epsilon)


def _heads(y, config: T5Config):
    return y.reshape(*y.shape[:2], config.num_heads, config.d_kv)


def _attend(p, q, k, v, config: T5Config, *, mask, bias):
    b, t = q.shape[:2]
    out = attention(q, k, v, scale=1.0, mask=mask, bias=bias)  # T5 folds no 1/sqrt(H) into its scores
    return linear(p["o"], out.reshape(b, t, config.num_heads * config.d_kv))


def _mlp(p, x, config: T5Config, key):
    act = activation(config.act_name)
    h = act(linear(p["wi_0"], x)) * linear(p["wi_1"], x) if config.is_gated else act(linear(p["wi"], x))
    return linear(p["wo"], dropout(h, config.dropout_rate, key))


def _sub_layers(block) -> list:
    return [block["layer"][str(j)] for j in range(len(block["layer"]))]


def encode(params, config: T5Config, inputs, *, rng=None):
    """Encoder hidden states [B, S, D] (final norm applied) for {input_ids, attention_mask}."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(ids) if mask is None else mask
    x = dropout(embedding(params["shared"], ids), config.dropout_rate, keys())
    positions = xp.arange(ids.shape[1])[None]
    blocks = params["encoder"]["block"]
    bias = position_bias(blocks["0"]["layer"]["0"]["SelfAttention"]["relative_attention_bias"], config,
                         positions, positions, bidirectional=True)
    visible = padding_mask(mask)
    for i in range(config.num_layers):
        attn, mlp = _sub_layers(blocks[str(i)])
        h = _norm(attn["layer_norm"], x, config)
        sa = attn["SelfAttention"]
        q, k, v = (_heads(linear(sa[n], h), config) for n in ("q", "k", "v"))
        x = x + dropout(_attend(sa, q, k, v, config, mask=visible, bias=bias), config.dropout_rate, keys())
        x = x + dropout(_mlp(mlp["DenseReluDense"], _norm(mlp["layer_norm"], x, config), config, keys()),
                        config.dropout_rate, keys())
    return dropout(_norm(params["encoder"]["final_layer_norm"], x, config), config.dropout_rate, keys())


def cross_cache(params, config: T5Config, encoder_hidden, encoder_mask) -> dict:
    """{"k", "v": [L, B, S, N, H] of every decoder layer's cross-attention, "mask": bool [B, 1, 1, S]}."""
    xp = ops().xp
    ks, vs = [], []
    for i in range(config.cache_layers):
        ca = params["decoder"]["block"][str(i)]["layer"]["1"]["EncDecAttention"]
        ks.append(_heads(linear(ca["k"], encoder_hidden), config))
        vs.append(_heads(linear(ca["v"], encoder_hidden), config))
    return {"k": xp.stack(ks), "v": xp.stack(vs), "mask": padding_mask(encoder_mask)}


def decode(params, config: T5Config, inputs, cross, *, cache: KVCache | None = None, rng=None):
    """Decoder hidden states [B, T, D] for {input_ids, position_ids?, attention_mask?} against `cross`;
    with `cache=` the self-attention keys/values are written at `cache.index` and (hidden, cache) returned."""
    keys = KeyStream(rng)
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    x = dropout(embedding(params["shared"], ids), config.dropout_rate, keys())
    blocks = params["decoder"]["block"]
    bias = position_bias(blocks["0"]["layer"]["0"]["SelfAttention"]["relative_attention_bias"], config,
                         positions, key_positions, bidirectional=False)
    visible = key_valid & causal_mask(positions, key_positions)
    k_stack, v_stack = (None, None) if cache is None else (cache.k, cache.v)
    for i in range(config.cache_layers):
        attn, crossed, mlp = _sub_layers(blocks[str(i)])
        h = _norm(attn["layer_norm"], x, config)
        sa = attn["SelfAttention"]
        q, k, v = (_heads(linear(sa[n], h), config) for n in ("q", "k", "v"))
        if cache is not None:
            k_stack, k = write_layer(k_stack, k, i, cache.index)
            v_stack, v = write_layer(v_stack, v, i, cache.index)
        x = x + dropout(_attend(sa, q, k, v, config, mask=visible, bias=bias), config.dropout_rate, keys())
        h = _norm(crossed["layer_norm"], x, config)
        ca = crossed["EncDecAttention"]
        x = x + dropout(_attend(ca, _heads(linear(ca["q"], h), config), cross["k"][i], cross["v"][i], config,
                                mask=cross["mask"], bias=None), config.dropout_rate, keys())
        x = x + dropout(_mlp(mlp["DenseReluDense"], _norm(mlp["layer_norm"], x, config), config, keys()),
                        config.dropout_rate, keys())
    x = dropout(_norm(params["decoder"]["final_layer_norm"], x, config), config.dropout_rate, keys())
    return x if cache is None else (x, cache._replace(k=k_stack, v=v_stack))


def forward(params, config: T5Config, inputs, *, rng=None):
    """Teacher-forced decoder hidden states [B, T, D] (`T5Model`'s last_hidden_state) for {input_ids,
    attention_mask, decoder_input_ids, decoder_attention_mask?}."""
    xp = ops().xp
    keys = KeyStream(rng)
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(inputs["input_ids"]) if mask is None else mask
    hidden = encode(params, config, {"input_ids": inputs["input_ids"], "attention_mask": mask}, rng=keys())
    cross = cross_cache(params, config, hidden, mask)
    dec = {"input_ids": inputs["decoder_input_ids"]}
    if inputs.get("decoder_attention_mask") is not None:
        dec["attention_mask"] = inputs["decoder_attention_mask"]
        dec["position_ids"] = xp.broadcast_to(xp.arange(dec["input_ids"].shape[1]), dec["input_ids"].shape)
    return decode(params, config, dec, cross, rng=keys())


def shapes(c: T5Config) -> dict[str, tuple]:
    d, inner, f = c.d_model, c.num_heads * c.d_kv, c.d_ff
    mlp = {"wi_0": (f, d), "wi_1": (f, d), "wo": (d, f)} if c.is_gated else {"wi": (f, d), "wo": (d, f)}
    out = {"shared.weight": (c.vocab_size, d)}
    for stack, count in (("encoder", c.num_layers), ("decoder", c.cache_layers)):
        attention_names = ("SelfAttention", "EncDecAttention") if stack == "decoder" else ("SelfAttention",)
        for i in range(count):
            p = f"{stack}.block.{i}.layer."
            for j, name in enumerate(attention_names):
                out.update({f"{p}{j}.{name}.{n}.weight": (inner, d) for n in ("q", "k", "v")})
                out[f"{p}{j}.{name}.o.weight"] = (d, inner)
                out[f"{p}{j}.layer_norm.weight"] = (d,)
            j = len(attention_names)
            out.update({f"{p}{j}.DenseReluDense.{n}.weight": s for n, s in mlp.items()})
            out[f"{p}{j}.layer_norm.weight"] = (d,)
        out[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            c.relative_attention_num_buckets, c.num_heads)
        out[f"{stack}.final_layer_norm.weight"] = (d,)
    return out


def seq2seq_lm(params, c: T5Config, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32; v1.0's tied head first rescales the decoder output."""
    if c.scales_decoder_output:
        hidden = hidden * (c.d_model ** -0.5)
    return linear(params["lm_head"], hidden).astype("float32")


# Megatron-style split over "model": fan-out projections split rows, fan-in ones columns.
SHARDING = (
    (r"\.(q|k|v|wi|wi_0|wi_1)\.weight$", ("model", None)),
    (r"\.(o|wo)\.weight$", (None, "model")),
    (r"^(shared|lm_head)\.weight$", ("model", None)),
    (r"relative_attention_bias\.weight$", ()),
    (r"layer_norm\.weight$", ()),
)

# A tiny checkpoint: encoder deeper than the decoder (transformers' generate sizes its cache by the
# encoder's num_layers, so a deeper decoder fails there), few buckets over a short distance so that
# relative positions fall into log-spaced buckets within the test sentences.
TINY = dict(vocab_size=97, d_model=48, d_kv=16, d_ff=80, num_layers=3, num_decoder_layers=2, num_heads=3,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, layer_norm_epsilon=3e-5,
            initializer_factor=1.5, dropout_rate=0.1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def _family(model_type: str, config_class, arch: str, recipe: TinyRecipe) -> Family:
    head = Head(task="seq2seq_lm", architecture=f"{arch}ForConditionalGeneration", apply=seq2seq_lm,
                shapes=lambda c, n: {"lm_head.weight": (c.vocab_size, c.d_model)}, tied=("lm_head.weight",),
                # transformers 5 always says tied; a file that stores a different lm_head is untied
                tied_unless_stored=True)
    return Family(
        model_type=model_type, config_class=config_class, prefix="", base_architecture=f"{arch}Model",
        forward=forward, encode=encode, cross_cache=cross_cache, decode=decode, shapes=shapes,
        embeddings="shared", heads={"seq2seq_lm": head}, lora_targets=("q", "v"), sharding=SHARDING,
        # the per-stack copies of `shared` are aliases transformers ties; older files store them
        ignored=(r"(^|\.)position_ids$", r"^(encoder|decoder)\.embed_tokens\.weight$",
                 r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$"),
        recipe=recipe, max_length=lambda c: None,
    )


FAMILIES = {
    "t5": _family("t5", T5Config, "T5", TinyRecipe(config="T5Config", kwargs=TINY, seed=51, tokenizer="unigram_eos")),
    "mt5": _family("mt5", MT5Config, "MT5", TinyRecipe(
        config="MT5Config", kwargs={**TINY, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                                    "num_layers": 2, "num_decoder_layers": 2, "layer_norm_epsilon": 2e-5, "initializer_factor": 0.5}, seed=52, tokenizer="unigram_eos")),
}
