"""BART (and mBART): a Transformer encoder-decoder with learned positions (offset by 2) and a
layer norm on the embeddings. BART's layers are post-norm; mBART's are pre-norm with a final
layer norm after each stack. Marian (`zoohub.backbones.marian`) reuses the layers and changes only
the embeddings.

The decoder runs in two ways over the same layers: `forward` is the teacher-forced pass
(`BartModel`'s last hidden state), `decode` one generation step over a self-attention `KVCache`
with the cross-attention keys and values of `cross_cache`, computed once per input.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("bart")
    >>> family.heads["seq2seq_lm"].architecture, family.is_encoder_decoder
    ('BartForConditionalGeneration', True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones import seq2seq
from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.decoder import KVCache, prepare
from zoohub.backbones.seq2seq import write_layer
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, causal_mask, dropout, embedding, get_path, layer_norm, linear
from zoohub.layers import padding_mask

_FALSE = (lambda v: not v, "false or absent")
_TRUE = (lambda v: v is None or v is True, "true")


def legacy_checks(*, normalize_before: bool, embedding_norm: bool, static_positions: bool) -> dict:
    """Keys of 4.x-era BART-family configs (still in many hub files) that transformers 5 no longer
    reads: accepted only at the values that describe the math this module computes."""
    def at(value: bool):
        return (lambda v: v is None or v == value, str(value).lower())
    return {
        "normalize_before": at(normalize_before), "add_final_layer_norm": at(normalize_before),
        "normalize_embedding": at(embedding_norm), "static_position_embeddings": at(static_positions),
    }


@dataclass(frozen=True, kw_only=True)
class BartConfig(ModelConfig):
    """BART hyperparameters; fields are `BartConfig` keys of transformers (defaults are its defaults).

    Layer norms use torch's default epsilon, 1e-5: BART's config has no key for it.

    >>> BartConfig.from_hf({"d_model": 48, "encoder_attention_heads": 3, "decoder_attention_heads": 3,
    ...     "decoder_layers": 2}).cache_layers
    2
    """

    MODEL_TYPE = "bart"
    CHECKS = {
        "is_encoder_decoder": _TRUE, "is_decoder": _FALSE,
        **legacy_checks(normalize_before=False, embedding_norm=True, static_positions=False),
    }
    # Ignored by transformers 5 too: the position-table offset is always 2; the rest are old generation
    # switches and a misspelled duplicate of classifier_dropout.
    # add_bias_logits: final_logits_bias is added whatever it says (transformers 4.x and 5 alike).
    IGNORED = frozenset({"extra_pos_embeddings", "force_bos_token_to_be_generated", "classif_dropout", "_num_labels",
                         "add_bias_logits"})
    PRE_NORM: ClassVar[bool] = False
    """mBART: a layer norm before each block and after each stack (BART: after each block)."""
    POSITION_OFFSET: ClassVar[int] = 2
    """BART's learned position table starts 2 rows in (a fairseq convention)."""
    LAYER_NORM_EPS: ClassVar[float] = 1e-5
    DEFAULT_TOKEN_IDS: ClassVar[dict] = {"pad_token_id": 1, "decoder_start_token_id": 2}
    """transformers' defaults of the token ids (metadata keys, kept in `extra`) when config.json has none."""

    vocab_size: int = 50265                  # V
    d_model: int = 1024                      # D
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16        # N
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096              # F
    max_position_embeddings: int = 1024
    activation_function: str = "gelu"
    scale_embedding: bool = False            # token embeddings times sqrt(D)
    dropout: float = 0.1
    attention_dropout: float = 0.0           # training only: transformers drops attention probabilities, zoohub's fit does not
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0           # training-time layer skipping; zoohub's fit keeps every layer
    decoder_layerdrop: float = 0.0
    classifier_dropout: float | None = 0.0
    init_std: float = 0.02
    num_hidden_layers: int | None = None     # transformers' alias of encoder_layers

    def __post_init__(self):
        for heads in (self.encoder_attention_heads, self.decoder_attention_heads):
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not divisible by {heads} heads")
        if self.num_hidden_layers not in (None, self.encoder_layers):
            raise ValueError(f"num_hidden_layers {self.num_hidden_layers} != encoder_layers {self.encoder_layers}")
        activation(self.activation_function)  # an unknown name fails at load time, naming it

    def token_id(self, name: str) -> int:
        """pad_token_id or decoder_start_token_id, from config.json or transformers' default."""
        value = self.extra.get(name)
        return self.DEFAULT_TOKEN_IDS[name] if value is None else value

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def initializer_range(self) -> float:
        return self.init_std

    @property
    def cache_layers(self) -> int:
        """Layers of the decoder's self-attention cache."""
        return self.decoder_layers

    @property
    def kv_heads(self) -> int:
        return self.decoder_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.d_model // self.decoder_attention_heads

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.d_model) if self.scale_embedding else 1.0

    @property
    def target_vocab_size(self) -> int:
        """Rows of the decoder's token table and of the logits (Marian may differ from vocab_size)."""
        return self.vocab_size

    def token_table(self, params, side: str):
        """The token embedding table of "encoder" or "decoder" (both are `shared` in BART)."""
        return params["shared"]["weight"]

    def position_rows(self, params, side: str, positions):
        """Position embeddings [B, T, D] of one stack for positions [B, T]."""
        return embedding(params[side]["embed_positions"], positions + self.POSITION_OFFSET)


# ---- the layers -----------------------------------------------------------------------------------

def _heads(x, n: int):
    b, t, d = x.shape
    return x.reshape(b, t, n, d // n)


def _attend(p, x, k, v, mask, n: int):
    """q from x, attention over given k/v [B, S, N, H], then out_proj: [B, T, D]."""
    b, t, d = x.shape
    q = _heads(linear(p["q_proj"], x), n)
    out = attention(q, k, v, scale=(d // n) ** -0.5, mask=mask)
    return linear(p["out_proj"], out.reshape(b, t, d))


def _residual(c: BartConfig, norm, x, block, keys):
    """x + block(x) with BART's post-norm (norm after the sum) or mBART's pre-norm (norm of the input)."""
    eps = c.LAYER_NORM_EPS
    if c.PRE_NORM:
        return x + dropout(block(layer_norm(norm, x, eps=eps)), c.dropout, keys())
    return layer_norm(norm, x + dropout(block(x), c.dropout, keys()), eps=eps)


def _feed_forward(c: BartConfig, p, keys):
    act = activation(c.activation_function)
    return lambda x: linear(p["fc2"], dropout(act(linear(p["fc1"], x)), c.activation_dropout, keys()))


def _embed(params, c: BartConfig, side: str, ids, positions, keys):
    x = embedding({"weight": c.token_table(params, side)}, ids) * c.embed_scale
    x = x + c.position_rows(params, side, positions).astype(x.dtype)
    if "layernorm_embedding" in params[side]:
        x = layer_norm(params[side]["layernorm_embedding"], x, eps=c.LAYER_NORM_EPS)
    return dropout(x, c.dropout, keys())


def _final_norm(params, c: BartConfig, side: str, x):
    return layer_norm(params[side]["layer_norm"], x, eps=c.LAYER_NORM_EPS) if c.PRE_NORM else x


def encode(params, c: BartConfig, inputs, *, rng=None):
    """The encoder's hidden states [B, S, D] for {input_ids, attention_mask}."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(ids) if mask is None else mask
    positions = xp.broadcast_to(xp.arange(ids.shape[1])[None], ids.shape)  # padding does not shift them
    x = _embed(params, c, "encoder", ids, positions, keys)
    attn_mask, n = padding_mask(mask), c.encoder_attention_heads
    for i in range(c.encoder_layers):
        p = params["encoder"]["layers"][str(i)]
        sa = p["self_attn"]

        def self_attention(h, sa=sa):
            return _attend(sa, h, _heads(linear(sa["k_proj"], h), n), _heads(linear(sa["v_proj"], h), n), attn_mask, n)

        x = _residual(c, p["self_attn_layer_norm"], x, self_attention, keys)
        x = _residual(c, p["final_layer_norm"], x, _feed_forward(c, p, keys), keys)
    return _final_norm(params, c, "encoder", x)


def cross_cache(params, c: BartConfig, enc_hidden, enc_mask) -> dict:
    """Every decoder layer's cross-attention keys and values {"k", "v": [L, B, S, N, H]} and the
    encoder's padding mask {"mask": bool [B, 1, 1, S]}."""
    xp = ops().xp
    layers = [params["decoder"]["layers"][str(i)]["encoder_attn"] for i in range(c.decoder_layers)]
    n = c.decoder_attention_heads
    return {"k": xp.stack([_heads(linear(p["k_proj"], enc_hidden), n) for p in layers]),
            "v": xp.stack([_heads(linear(p["v_proj"], enc_hidden), n) for p in layers]),
            "mask": padding_mask(enc_mask)}


def decode(params, c: BartConfig, inputs, cross, *, cache: KVCache | None = None, rng=None):
    """Decoder hidden states [B, T, D] for {input_ids, position_ids?, attention_mask?} given
    `cross_cache`'s keys and values; with `cache=` the new self-attention keys/values are written
    at `cache.index` and (hidden, cache) is returned. Positions default to 0..T-1 (after the cache's
    index): BART numbers decoder tokens by slot, padding included."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    positions = inputs.get("position_ids")
    if positions is None:
        start = 0 if cache is None else cache.index
        positions = xp.broadcast_to(xp.arange(ids.shape[1])[None] + start, ids.shape)
    _, positions, key_positions, key_valid = prepare({**inputs, "position_ids": positions}, cache)
    self_mask = key_valid & causal_mask(positions, key_positions)
    x = _embed(params, c, "decoder", ids, positions, keys)
    n = c.decoder_attention_heads
    stacks = None if cache is None else {"k": cache.k, "v": cache.v}
    for i in range(c.decoder_layers):
        p = params["decoder"]["layers"][str(i)]
        sa, ca = p["self_attn"], p["encoder_attn"]

        def self_attention(h, sa=sa, i=i):
            k, v = _heads(linear(sa["k_proj"], h), n), _heads(linear(sa["v_proj"], h), n)
            if stacks is not None:
                stacks["k"], k = write_layer(stacks["k"], k, i, cache.index)
                stacks["v"], v = write_layer(stacks["v"], v, i, cache.index)
            return _attend(sa, h, k, v, self_mask, n)

        def cross_attention(h, ca=ca, i=i):
            return _attend(ca, h, cross["k"][i], cross["v"][i], cross["mask"], n)

        x = _residual(c, p["self_attn_layer_norm"], x, self_attention, keys)
        x = _residual(c, p["encoder_attn_layer_norm"], x, cross_attention, keys)
        x = _residual(c, p["final_layer_norm"], x, _feed_forward(c, p, keys), keys)
    x = _final_norm(params, c, "decoder", x)
    return x if cache is None else (x, cache._replace(**stacks))


def shift_right(ids, c: BartConfig):
    """transformers' `shift_tokens_right`: the decoder start token, then ids[:, :-1] (-100 -> pad)."""
    return seq2seq.shift_right(ids, start_id=c.token_id("decoder_start_token_id"), pad_id=c.token_id("pad_token_id"))


def forward(params, c: BartConfig, inputs, *, rng=None):
    """Teacher-forced decoder hidden states [B, T, D] (`BartModel`'s last_hidden_state) for
    {input_ids, attention_mask, decoder_input_ids?, decoder_attention_mask?}; without
    decoder_input_ids the inputs shifted right are used, as BartModel does."""
    xp = ops().xp
    keys = KeyStream(rng)
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(inputs["input_ids"]) if mask is None else mask
    hidden = encode(params, c, {"input_ids": inputs["input_ids"], "attention_mask": mask}, rng=keys())
    dec_ids = inputs.get("decoder_input_ids")
    dec_ids = shift_right(inputs["input_ids"], c) if dec_ids is None else dec_ids
    dec = {"input_ids": dec_ids}
    if inputs.get("decoder_attention_mask") is not None:
        dec["attention_mask"] = inputs["decoder_attention_mask"]
    return decode(params, c, dec, cross_cache(params, c, hidden, mask), rng=keys())


# ---- tensors --------------------------------------------------------------------------------------

def _attention_shapes(prefix: str, d: int) -> dict:
    out = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        out[f"{prefix}.{name}.weight"], out[f"{prefix}.{name}.bias"] = (d, d), (d,)
    return out


def _norm(name: str, d: int) -> dict:
    return {f"{name}.weight": (d,), f"{name}.bias": (d,)}


def layer_shapes(c: BartConfig, side: str) -> dict[str, tuple]:
    """One stack's layers (and mBART's final norm), in the checkpoint's names."""
    d = c.d_model
    f = c.encoder_ffn_dim if side == "encoder" else c.decoder_ffn_dim
    blocks = ("self_attn",) if side == "encoder" else ("self_attn", "encoder_attn")
    out = {}
    for i in range(c.encoder_layers if side == "encoder" else c.decoder_layers):
        p = f"{side}.layers.{i}."
        for block in blocks:
            out.update(_attention_shapes(p + block, d))
            out.update(_norm(f"{p}{block}_layer_norm", d))
        out.update({p + "fc1.weight": (f, d), p + "fc1.bias": (f,), p + "fc2.weight": (d, f), p + "fc2.bias": (d,)})
        out.update(_norm(p + "final_layer_norm", d))
    if c.PRE_NORM:
        out.update(_norm(f"{side}.layer_norm", d))
    return out


def shapes(c: BartConfig) -> dict[str, tuple]:
    d = c.d_model
    out = {"shared.weight": (c.vocab_size, d)}
    for side in ("encoder", "decoder"):
        out[f"{side}.embed_positions.weight"] = (c.max_position_embeddings + c.POSITION_OFFSET, d)
        out.update(_norm(f"{side}.layernorm_embedding", d))
        out.update(layer_shapes(c, side))
    return out


# ---- the head -------------------------------------------------------------------------------------

def lm_logits(params, c: BartConfig, hidden, inputs=None, *, rng=None):
    """Logits [B, T, V] in float32: `lm_head` (the decoder's token table when tied) + final_logits_bias."""
    weight = get_path(params, "lm_head.weight")
    if weight is None:  # tied, and the family's `embeddings` is not the decoder's table (Marian, separate vocabularies)
        weight = c.token_table(params["model"], "decoder")
    return (linear({"weight": weight}, hidden) + params["final_logits_bias"]).astype("float32")


def seq2seq_head(architecture: str) -> Head:
    return Head(task="seq2seq_lm", architecture=architecture, apply=lm_logits, tied=("lm_head.weight",),
                zeros_if_missing=("final_logits_bias",),
                shapes=lambda c, n: {"lm_head.weight": (c.target_vocab_size, c.d_model),
                                     "final_logits_bias": (1, c.target_vocab_size)})


# Megatron-style split over "model" of torch Linear weights [out, in]: q/k/v and fc1 split their
# output rows, out_proj and fc2 their input columns; token tables split over the vocabulary.
SHARDING = (
    (r"\.(q_proj|k_proj|v_proj|fc1)\.weight$", ("model", None)),
    (r"\.(q_proj|k_proj|v_proj|fc1)\.bias$", ("model",)),
    (r"\.(out_proj|fc2)\.weight$", (None, "model")),
    (r"(^|\.)(shared|embed_tokens)\.weight$", ("model", None)),
    (r"^lm_head\.weight$", ("model", None)),
    (r"(norm|layernorm_embedding)\.(weight|bias)$|embed_positions\.weight$|^final_logits_bias$", ()),
)

# Aliases of `shared` that older files store beside it (transformers ties them on load).
TIED_ALIASES = r"^(model\.)?(encoder|decoder)\.embed_tokens\.weight$"


def family(model_type: str, config_class, arch: str, recipe: TinyRecipe, **changes) -> Family:
    """A BART-shaped family: `BartModel`-like base, `...ForConditionalGeneration` head."""
    settings = dict(
        model_type=model_type, config_class=config_class, prefix="model", base_architecture=f"{arch}Model",
        forward=forward, shapes=shapes, embeddings="shared", ignored=(r"(^|\.)position_ids$", TIED_ALIASES),
        heads={"seq2seq_lm": seq2seq_head(f"{arch}ForConditionalGeneration")},
        encode=encode, cross_cache=cross_cache, decode=decode,
        learned_positions=True, lora_targets=("q_proj", "v_proj"), sharding=SHARDING, recipe=recipe)
    return Family(**{**settings, **changes})


# A large init and perturbed norms (tests/tiny.py) so a skipped scale or a wrong offset shows; the
# position table (40 + 2 rows) is short enough that a missing offset reads other rows.
TINY = dict(vocab_size=300, d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
             decoder_attention_heads=3, encoder_ffn_dim=80, decoder_ffn_dim=72, max_position_embeddings=40,
             init_std=0.2, activation_function="gelu", scale_embedding=True,
             pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)

FAMILIES = {
    "bart": family("bart", BartConfig, "Bart", TinyRecipe(config="BartConfig", kwargs=TINY, seed=31,
                                                          tokenizer="byte_bpe")),
}
