"""MPNet: a post-norm BERT-like encoder with learned absolute positions (numbered after the padding
id, as RoBERTa does) plus a T5-style relative position bias shared by every layer.

transformers' `MPNetModel` fixes two things its config seems to set: the padding id is always 1
(positions and the padding row), and the relative buckets are always computed with 32 buckets over
a distance of 128, whatever `relative_attention_num_buckets` says (that key only sizes the table).

    >>> from zoohub.backbones import get_family
    >>> family = get_family("mpnet")
    >>> family.prefix, family.lora_targets, family.heads["text_classifier"].architecture
    ('mpnet', ('q', 'v'), 'MPNetForSequenceClassification')
    >>> relative_buckets(4)[0].tolist()  # query 0 to keys 0..3: keys ahead sit in the upper half
    [0, 17, 18, 19]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.bert import roberta_masked_lm
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, dropout, embedding, layer_norm, linear, padding_mask

PADDING_ID = 1  # MPNetEmbeddings.padding_idx, hard-coded in transformers (not config.pad_token_id)
BUCKETS, MAX_DISTANCE = 32, 128  # MPNetEncoder.compute_position_bias's defaults, the only values it uses


@dataclass(frozen=True, kw_only=True)
class MPNetConfig(ModelConfig):
    """MPNet encoder hyperparameters; fields are `MPNetConfig` keys of transformers.

    >>> MPNetConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80}).relative_attention_num_buckets
    32
    """

    MODEL_TYPE = "mpnet"

    vocab_size: int
    hidden_size: int          # D
    num_hidden_layers: int
    num_attention_heads: int  # N
    intermediate_size: int    # F
    max_position_embeddings: int = 512
    relative_attention_num_buckets: int = 32  # rows of the bias table; the buckets used are 0..31
    hidden_act: str = "gelu"  # the exact erf GELU
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.relative_attention_num_buckets < BUCKETS:
            raise ValueError(f"relative_attention_num_buckets={self.relative_attention_num_buckets}: transformers "
                             f"always looks up {BUCKETS} buckets, so the table needs at least {BUCKETS} rows")


def relative_buckets(length: int) -> np.ndarray:
    """Bucket [T, T] of each (query, key) pair, as `MPNetEncoder.relative_position_bucket` computes it:
    half the buckets per direction, exact up to 8 apart, then logarithmic up to 128, then the last one.
    Float32 like torch, so the truncations at 16, 32 and 64 apart land where transformers' do."""
    n = np.arange(length)[:, None] - np.arange(length)[None, :]  # query - key (transformers' -relative)
    half = BUCKETS // 2
    exact = half // 2
    out = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(exact)
    far = exact + (np.log(ratio) / np.float32(math.log(MAX_DISTANCE / exact)) * np.float32(half - exact)).astype(np.int64)
    return out + np.where(n < exact, n, np.minimum(far, half - 1))


def _position_ids(ids):
    xp = ops().xp
    real = (ids != PADDING_ID).astype(xp.int32)
    return xp.cumsum(real, axis=1) * real + PADDING_ID


def forward(params, config: MPNetConfig, inputs, *, rng=None):
    """Hidden states [B, T, D] for inputs {input_ids, attention_mask}."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = xp.ones_like(ids)
    positions = inputs.get("position_ids")
    if positions is None:
        positions = _position_ids(ids)
    emb = params["embeddings"]
    x = embedding(emb["word_embeddings"], ids) + embedding(emb["position_embeddings"], positions)
    x = dropout(layer_norm(emb["LayerNorm"], x, eps=config.layer_norm_eps), config.hidden_dropout_prob, keys())
    b, t, d = x.shape
    n = config.num_attention_heads
    # One bias for every layer, from distances in the padded row (transformers ignores padding here).
    table = params["encoder"]["relative_attention_bias"]["weight"]                     # [buckets, N]
    bias = table[relative_buckets(t)].astype(xp.float32).transpose(2, 0, 1)[None]       # [1, N, T, T]
    attn_mask = padding_mask(mask)
    act = activation(config.hidden_act)
    for i in range(config.num_hidden_layers):
        layer = params["encoder"]["layer"][str(i)]
        sa = layer["attention"]["attn"]
        q, k, v = (linear(sa[name], x).reshape(b, t, n, d // n) for name in ("q", "k", "v"))
        a = attention(q, k, v, scale=(d // n) ** -0.5, mask=attn_mask, bias=bias)
        a = dropout(linear(sa["o"], a.reshape(b, t, d)), config.hidden_dropout_prob, keys())
        x = layer_norm(layer["attention"]["LayerNorm"], a + x, eps=config.layer_norm_eps)
        h = linear(layer["output"]["dense"], act(linear(layer["intermediate"]["dense"], x)))
        h = dropout(h, config.hidden_dropout_prob, keys())
        x = layer_norm(layer["output"]["LayerNorm"], h + x, eps=config.layer_norm_eps)
    return x


def shapes(c: MPNetConfig) -> dict[str, tuple]:
    d, f = c.hidden_size, c.intermediate_size
    out = {
        "embeddings.word_embeddings.weight": (c.vocab_size, d),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, d),
        "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
        "encoder.relative_attention_bias.weight": (c.relative_attention_num_buckets, c.num_attention_heads),
    }
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("q", "k", "v", "o"):
            out[p + f"attention.attn.{name}.weight"] = (d, d)
            out[p + f"attention.attn.{name}.bias"] = (d,)
        out.update({
            p + "attention.LayerNorm.weight": (d,), p + "attention.LayerNorm.bias": (d,),
            p + "intermediate.dense.weight": (f, d), p + "intermediate.dense.bias": (f,),
            p + "output.dense.weight": (d, f), p + "output.dense.bias": (d,),
            p + "output.LayerNorm.weight": (d,), p + "output.LayerNorm.bias": (d,),
        })
    return out


def pooler_shapes(c: MPNetConfig) -> dict[str, tuple]:
    """MPNetModel's pooler: saved by the bare model, unused by every head."""
    return {"pooler.dense.weight": (c.hidden_size, c.hidden_size), "pooler.dense.bias": (c.hidden_size,)}


# ---- heads -------------------------------------------------------------------------------------

def classifier(params, c: MPNetConfig, hidden, inputs, *, rng=None):
    xp = ops().xp
    keys = KeyStream(rng)
    head = params["classifier"]
    x = dropout(hidden[:, 0], c.hidden_dropout_prob, keys())
    x = dropout(xp.tanh(linear(head["dense"], x)), c.hidden_dropout_prob, keys())
    return linear(head["out_proj"], x)


masked_lm = roberta_masked_lm  # MPNetLMHead is RobertaLMHead: the same names, always the exact GELU


def _heads() -> dict[str, Head]:
    d = lambda c: c.hidden_size  # noqa: E731
    return {
        "text_classifier": Head(
            task="text_classifier", architecture="MPNetForSequenceClassification", apply=classifier,
            trained_with_lora=("classifier",),
            shapes=lambda c, n: {"classifier.dense.weight": (d(c), d(c)), "classifier.dense.bias": (d(c),),
                                 "classifier.out_proj.weight": (n, d(c)), "classifier.out_proj.bias": (n,)}),
        "masked_lm": Head(
            task="masked_lm", architecture="MPNetForMaskedLM", apply=masked_lm,
            shapes=lambda c, n: {
                "lm_head.dense.weight": (d(c), d(c)), "lm_head.dense.bias": (d(c),),
                "lm_head.layer_norm.weight": (d(c),), "lm_head.layer_norm.bias": (d(c),),
                "lm_head.bias": (c.vocab_size,), "lm_head.decoder.weight": (c.vocab_size, d(c)),
            },
            tied=("lm_head.decoder.weight",),
            ignored=(r"^lm_head\.decoder\.bias$",),  # an alias of lm_head.bias
        ),
        "token_classifier": token_classifier("MPNetForTokenClassification", width=d,
                                             dropout_rate=lambda c: c.hidden_dropout_prob),
        "question_answerer": question_answerer("MPNetForQuestionAnswering", width=d),
    }


# Megatron-style split over "model" of torch Linear weights [out, in]; the bias table splits by head.
SHARDING = (
    (r"\.attn\.(q|k|v)\.weight$", ("model", None)),
    (r"\.attn\.(q|k|v)\.bias$", ("model",)),
    (r"\.intermediate\.dense\.weight$", ("model", None)),
    (r"\.intermediate\.dense\.bias$", ("model",)),
    (r"\.(attn\.o|layer\.\d+\.output\.dense)\.weight$", (None, "model")),
    (r"relative_attention_bias\.weight$", (None, "model")),
    (r"word_embeddings\.weight$", ("model", None)),
    (r"position_embeddings\.weight$", ()),
)

RECIPE = TinyRecipe(
    config="MPNetConfig", seed=31, tokenizer="mpnet_wordpiece",
    # positions start after the padding id 1: 40 rows hold 38 tokens
    kwargs=dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
                max_position_embeddings=40, layer_norm_eps=1e-6, initializer_range=0.5, hidden_act="gelu",
                relative_attention_num_buckets=34, num_labels=3, pad_token_id=1, bos_token_id=0, eos_token_id=2),
)

FAMILIES = {
    "mpnet": Family(
        model_type="mpnet", config_class=MPNetConfig, prefix="mpnet", base_architecture="MPNetModel",
        forward=forward, shapes=shapes, optional_shapes=pooler_shapes, embeddings="embeddings.word_embeddings",
        heads=_heads(), lora_targets=("q", "v"), sharding=SHARDING, recipe=RECIPE,
        max_length=lambda c: c.max_position_embeddings - PADDING_ID - 1,
    ),
}
