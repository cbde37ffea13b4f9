"""DeBERTa-v2 and DeBERTa-v3 (`deberta-v2`): a post-norm encoder with disentangled attention.

Each attention score adds to content-content `q.k` a content-to-position term (`c2p`: the query
against the key's relative position) and a position-to-content term (`p2c`: the key against the
query's relative position), read from one table of relative-position embeddings shared by all
layers. DeBERTa-v3 buckets distances past `position_buckets / 2` logarithmically, layer-normalises
the table (`norm_rel_ebd`) and projects it with the content query/key weights (`share_att_key`).

Relative positions depend only on the sequence length, so their buckets and gather indices are
built once on the host (numpy) and are constants of the compiled program. Only the table rows that
some distance in the sequence uses are projected and scored: 2T - 1 of them, not 2 * buckets.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("deberta-v2")
    >>> family.prefix, family.heads["masked_lm"].architecture
    ('deberta', 'DebertaV2ForMaskedLM')
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, dropout, embedding, layer_norm, linear, padding_mask


@dataclass(frozen=True, kw_only=True)
class DebertaV2Config(ModelConfig):
    """DeBERTa-v2/v3 hyperparameters; fields are `DebertaV2Config` keys of transformers (some,
    like `position_buckets`, are keys transformers reads from config.json without declaring them).

    >>> c = DebertaV2Config.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80, "relative_attention": True,
    ...     "position_buckets": 8, "pos_att_type": "p2c|c2p"})
    >>> c.attention_types, c.position_span
    (('p2c', 'c2p'), 8)
    >>> DebertaV2Config.from_hf({**c.to_hf(), "conv_kernel_size": 3})
    Traceback (most recent call last):
    ...
    zoohub.errors.UnsupportedConfigError: deberta-v2 config has conv_kernel_size=3, which zoohub does not implement (supported: 0 or absent (no convolution layer: DeBERTa-v2-xlarge's is not implemented)); it changes the model's outputs, so it is not ignored
    """

    MODEL_TYPE = "deberta-v2"
    CHECKS = {
        "conv_kernel_size": (lambda v: not v, "0 or absent (no convolution layer: DeBERTa-v2-xlarge's is not implemented)"),
        "attention_head_size": (lambda v: v is None, "absent (head size is hidden_size / num_attention_heads)"),
    }
    # conv_* only matter with a convolution layer (refused above); the rest are init or flash settings.
    IGNORED = frozenset({"conv_act", "conv_groups", "padding_idx"})

    vocab_size: int
    hidden_size: int          # D
    num_hidden_layers: int
    num_attention_heads: int  # N
    intermediate_size: int    # F
    hidden_act: str = "gelu"  # exact erf GELU
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    embedding_size: int | None = None
    """Width of the token table when it differs from D (then `embed_proj` [D, E] maps it up)."""
    position_biased_input: bool = True
    """Add learned absolute positions to the token embeddings (DeBERTa-v3: false, relative only)."""
    relative_attention: bool = False
    pos_att_type: str | list | None = None
    """"p2c|c2p" (a string or a list): which disentangled terms join the content score."""
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1        # > 0: log buckets past position_buckets / 2, and a table of 2 * buckets
    share_att_key: bool = False
    """Project relative positions with the content query/key weights (else pos_query_proj / pos_key_proj)."""
    norm_rel_ebd: str = "none"        # "layer_norm": LayerNorm the relative table (encoder.LayerNorm)
    pooler_hidden_size: int | None = None
    pooler_hidden_act: str = "gelu"
    pooler_dropout: float = 0.0
    cls_dropout: float | None = None
    legacy: bool = True
    """Masked-LM head: transformers' legacy `cls.predictions` (a decoder tied to the embeddings) or
    `lm_predictions.lm_head` (the original DeBERTa head, which multiplies by the embeddings)."""

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.pooler_hidden_size not in (None, self.hidden_size):
            raise ValueError(f"pooler_hidden_size {self.pooler_hidden_size} != hidden_size {self.hidden_size}")
        unknown = set(self.attention_types) - {"c2p", "p2c"}
        if unknown:
            raise ValueError(f"pos_att_type {sorted(unknown)} is not c2p or p2c")

    @property
    def attention_types(self) -> tuple[str, ...]:
        kinds = self.pos_att_type or []
        if isinstance(kinds, str):
            kinds = kinds.lower().split("|")
        return tuple(k.strip() for k in kinds if k.strip())

    @property
    def max_relative(self) -> int:
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def position_span(self) -> int:
        """Half the relative table: distances are clipped to [-span, span - 1] around row `span`."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    @property
    def embed_width(self) -> int:
        return self.embedding_size or self.hidden_size


def relative_positions(length: int, buckets: int, max_position: int) -> np.ndarray:
    """[T, T] int: the (log-bucketed when buckets > 0) distance i - j, as transformers'
    `build_relative_position`: exact within buckets / 2, then ceil(log) steps up to max_position.

    >>> relative_positions(6, 4, 8)[5].tolist()   # distances 5..0 seen from the last token
    [3, 3, 3, 2, 1, 0]
    """
    ids = np.arange(length, dtype=np.int64)
    rel = ids[:, None] - ids[None, :]
    if buckets <= 0 or max_position <= 0:
        return rel
    mid = buckets // 2
    # float32 as torch computes it (a float64 log can round a bucket boundary the other way)
    absolute = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
    ratio = np.log(absolute / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio.astype(np.float32) * np.float32(mid - 1)) + mid
    return np.where(np.abs(rel) <= mid, rel, log_pos * np.sign(rel)).astype(np.int64)


def _position_indices(c: DebertaV2Config, length: int):
    """The table rows the sequence uses and, per (query, key), the index among them of the c2p
    and the p2c position (transformers' clamped `relative_pos + span` and `-relative_pos + span`)."""
    span = c.position_span
    rel = relative_positions(length, c.position_buckets, c.max_relative)
    c2p = np.clip(rel + span, 0, 2 * span - 1)
    p2c = np.clip(-rel.T + span, 0, 2 * span - 1)  # [query i, key j]: the key's distance j - i, negated
    rows = np.unique(np.concatenate([c2p.ravel(), p2c.ravel()]))
    remap = np.zeros(2 * span, np.int32)
    remap[rows] = np.arange(len(rows), dtype=np.int32)
    return rows.astype(np.int32), remap[c2p], remap[p2c]


def _heads(x, n: int):
    return x.reshape(*x.shape[:-1], n, x.shape[-1] // n)


def _relative_bias(c: DebertaV2Config, sa, q, k, rel_table, scale: float):
    """c2p + p2c scores [B, N, T, S] (already scaled) for queries q and keys k [B, T, N, H]."""
    xp = ops().xp
    t, n = q.shape[1], c.num_attention_heads
    rows, c2p_index, p2c_index = _position_indices(c, t)
    rel = xp.take(rel_table, xp.asarray(rows), axis=0)                          # [P, D]: the rows in use
    bias = 0.0
    if "c2p" in c.attention_types:
        pos_key = _heads(linear(sa["key_proj" if c.share_att_key else "pos_key_proj"], rel), n)  # PNH
        scores = xp.matmul(q.transpose(0, 2, 1, 3), pos_key.transpose(1, 2, 0)[None])      # BNTP
        index = xp.broadcast_to(xp.asarray(c2p_index)[None, None], scores.shape[:2] + c2p_index.shape)
        bias = bias + xp.take_along_axis(scores, index, axis=-1).astype(xp.float32) * scale
    if "p2c" in c.attention_types:
        pos_query = _heads(linear(sa["query_proj" if c.share_att_key else "pos_query_proj"], rel), n)
        scores = xp.matmul(k.transpose(0, 2, 1, 3), pos_query.transpose(1, 2, 0)[None])    # BNSP
        index = xp.broadcast_to(xp.asarray(p2c_index.T)[None, None], scores.shape[:2] + p2c_index.shape)
        bias = bias + xp.take_along_axis(scores, index, axis=-1).swapaxes(-1, -2).astype(xp.float32) * scale
    return bias


def forward(params, config: DebertaV2Config, inputs, *, rng=None):
    """Hidden states [B, T, D] for inputs {input_ids, attention_mask, token_type_ids?, position_ids?}."""
    xp = ops().xp
    c = config
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(ids) if mask is None else mask
    emb = params["embeddings"]
    x = embedding(emb["word_embeddings"], ids)
    if c.position_biased_input:
        positions = inputs.get("position_ids")
        positions = xp.broadcast_to(xp.arange(ids.shape[1])[None], ids.shape) if positions is None else positions
        x = x + embedding(emb["position_embeddings"], positions)
    if c.type_vocab_size > 0:
        types = inputs.get("token_type_ids")
        x = x + embedding(emb["token_type_embeddings"], xp.zeros_like(ids) if types is None else types)
    if c.embedding_size not in (None, c.hidden_size):
        x = linear(emb["embed_proj"], x)
    x = layer_norm(emb["LayerNorm"], x, eps=c.layer_norm_eps) * mask[..., None].astype(x.dtype)
    x = dropout(x, c.hidden_dropout_prob, keys())

    n = c.num_attention_heads
    head_dim = c.hidden_size // n
    scale = 1.0 / math.sqrt(head_dim * (1 + len(c.attention_types)))  # each term adds its variance
    rel_table = None
    if c.relative_attention:
        rel_table = params["encoder"]["rel_embeddings"]["weight"]
        if "layer_norm" in c.norm_rel_ebd.lower():
            rel_table = layer_norm(params["encoder"]["LayerNorm"], rel_table, eps=c.layer_norm_eps)
    attn_mask = padding_mask(mask)
    act = activation(c.hidden_act)
    for i in range(c.num_hidden_layers):
        layer = params["encoder"]["layer"][str(i)]
        sa = layer["attention"]["self"]
        q, k, v = (_heads(linear(sa[name], x), n) for name in ("query_proj", "key_proj", "value_proj"))
        bias = _relative_bias(c, sa, q, k, rel_table, scale) if rel_table is not None else None
        a = attention(q, k, v, scale=scale, mask=attn_mask, bias=bias)
        a = dropout(linear(layer["attention"]["output"]["dense"], a.reshape(x.shape)), c.hidden_dropout_prob, keys())
        x = layer_norm(layer["attention"]["output"]["LayerNorm"], a + x, eps=c.layer_norm_eps)
        h = linear(layer["output"]["dense"], act(linear(layer["intermediate"]["dense"], x)))
        h = dropout(h, c.hidden_dropout_prob, keys())
        x = layer_norm(layer["output"]["LayerNorm"], h + x, eps=c.layer_norm_eps)
    return x


def _norm(name: str, d: int) -> dict[str, tuple]:
    return {f"{name}.weight": (d,), f"{name}.bias": (d,)}


def _linear(name: str, out: int, inp: int, bias: bool = True) -> dict[str, tuple]:
    return {f"{name}.weight": (out, inp), **({f"{name}.bias": (out,)} if bias else {})}


def shapes(c: DebertaV2Config) -> dict[str, tuple]:
    d, e, f = c.hidden_size, c.embed_width, c.intermediate_size
    out = {"embeddings.word_embeddings.weight": (c.vocab_size, e), **_norm("embeddings.LayerNorm", d)}
    if c.position_biased_input:
        out["embeddings.position_embeddings.weight"] = (c.max_position_embeddings, e)
    if c.type_vocab_size > 0:
        out["embeddings.token_type_embeddings.weight"] = (c.type_vocab_size, e)
    if e != d:
        out.update(_linear("embeddings.embed_proj", d, e, bias=False))
    if c.relative_attention:
        out["encoder.rel_embeddings.weight"] = (2 * c.position_span, d)
    if "layer_norm" in c.norm_rel_ebd.lower():  # built even without relative attention (then unused)
        out.update(_norm("encoder.LayerNorm", d))
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("query_proj", "key_proj", "value_proj"):
            out.update(_linear(p + f"attention.self.{name}", d, d))
        if c.relative_attention and not c.share_att_key:
            if "c2p" in c.attention_types:
                out.update(_linear(p + "attention.self.pos_key_proj", d, d))
            if "p2c" in c.attention_types:
                out.update(_linear(p + "attention.self.pos_query_proj", d, d))
        out.update({**_linear(p + "attention.output.dense", d, d), **_norm(p + "attention.output.LayerNorm", d),
                    **_linear(p + "intermediate.dense", f, d), **_linear(p + "output.dense", d, f),
                    **_norm(p + "output.LayerNorm", d)})
    return out


# ---- heads -------------------------------------------------------------------------------------

def classifier(params, c: DebertaV2Config, hidden, inputs, *, rng=None):
    """ContextPooler (dropout, dense, pooler_hidden_act on the first token), dropout, classifier."""
    keys = KeyStream(rng)
    pooled = linear(params["pooler"]["dense"], dropout(hidden[:, 0], c.pooler_dropout, keys()))
    pooled = activation(c.pooler_hidden_act)(pooled)
    rate = c.hidden_dropout_prob if c.cls_dropout is None else c.cls_dropout
    return linear(params["classifier"], dropout(pooled, rate, keys()))


def masked_lm(params, c: DebertaV2Config, hidden, inputs, *, rng=None):
    if c.legacy:  # dense -> act -> norm (width E) -> decoder, whose bias is cls.predictions.bias
        head = params["cls"]["predictions"]
        x = activation(c.hidden_act)(linear(head["transform"]["dense"], hidden))
        x = layer_norm(head["transform"]["LayerNorm"], x, eps=c.layer_norm_eps)
        return linear({"weight": head["decoder"]["weight"]}, x) + head["bias"]
    head = params["lm_predictions"]["lm_head"]  # always the token table, whatever tie_word_embeddings says
    x = activation(c.hidden_act)(linear(head["dense"], hidden))
    x = layer_norm(head["LayerNorm"], x, eps=c.layer_norm_eps)
    return linear({"weight": params["deberta"]["embeddings"]["word_embeddings"]["weight"]}, x) + head["bias"]


def _masked_lm_shapes(c: DebertaV2Config, n: int) -> dict[str, tuple]:
    d, e, v = c.hidden_size, c.embed_width, c.vocab_size
    if c.legacy:
        return {**_linear("cls.predictions.transform.dense", e, d), **_norm("cls.predictions.transform.LayerNorm", e),
                "cls.predictions.bias": (v,), "cls.predictions.decoder.weight": (v, e)}
    return {**_linear("lm_predictions.lm_head.dense", d, d), **_norm("lm_predictions.lm_head.LayerNorm", d),
            "lm_predictions.lm_head.bias": (v,)}


# Megatron-style split over "model" of torch Linear weights [out, in]; the relative table is replicated.
SHARDING = (
    (r"\.(query_proj|key_proj|value_proj|pos_key_proj|pos_query_proj|intermediate\.dense)\.weight$", ("model", None)),
    (r"\.(query_proj|key_proj|value_proj|pos_key_proj|pos_query_proj|intermediate\.dense)\.bias$", ("model",)),
    (r"\.(attention\.output\.dense|layer\.\d+\.output\.dense)\.weight$", (None, "model")),
    (r"word_embeddings\.weight$", ("model", None)),
    (r"(position_embeddings|token_type_embeddings|rel_embeddings|embed_proj)\.weight$", ()),
)

# DeBERTa-v3's shape: relative only (no absolute positions, no segments), log buckets smaller than
# the test sentences are long, a normalised shared relative table, both disentangled terms.
RECIPE = TinyRecipe(config="DebertaV2Config", seed=37, tokenizer="deberta_unigram", kwargs=dict(
    vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
    max_position_embeddings=64, type_vocab_size=0, position_biased_input=False, relative_attention=True,
    position_buckets=6, max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm",
    pos_att_type="p2c|c2p", layer_norm_eps=1e-6, initializer_range=0.3, hidden_act="gelu",
    pooler_hidden_act="gelu_new", num_labels=3, pad_token_id=0))

_d = lambda c: c.hidden_size  # noqa: E731
FAMILIES = {"deberta-v2": Family(
    model_type="deberta-v2", config_class=DebertaV2Config, prefix="deberta", base_architecture="DebertaV2Model",
    forward=forward, shapes=shapes, embeddings="embeddings.word_embeddings",
    ignored=(r"(^|\.)position_ids$",), heads={
        "text_classifier": Head(
            task="text_classifier", architecture="DebertaV2ForSequenceClassification", apply=classifier,
            trained_with_lora=("classifier", "pooler"),
            shapes=lambda c, n: {**_linear("pooler.dense", c.hidden_size, c.hidden_size), **_linear("classifier", n, c.hidden_size)}),
        "masked_lm": Head(
            task="masked_lm", architecture="DebertaV2ForMaskedLM", apply=masked_lm, shapes=_masked_lm_shapes,
            tied=("cls.predictions.decoder.weight",),
            # the decoder's bias is cls.predictions.bias; mask_predictions is ELECTRA-style pretraining
            ignored=(r"^cls\.predictions\.decoder\.bias$", r"^mask_predictions\.")),
        "token_classifier": token_classifier("DebertaV2ForTokenClassification", width=_d,
                                             dropout_rate=lambda c: c.hidden_dropout_prob),
        "question_answerer": question_answerer("DebertaV2ForQuestionAnswering", width=_d),
    },
    lora_targets=("query_proj", "value_proj"), sharding=SHARDING, recipe=RECIPE,
    token_types=True,  # DeBERTa's tokenizer returns segment ids; a table of type_vocab_size 0 ignores them
    learned_positions=False,  # relative positions: max_position_embeddings bounds the buckets, not the length
    max_length=lambda c: c.max_position_embeddings if c.position_biased_input else None,
)}
