"""BERT and RoBERTa (and XLM-RoBERTa): post-norm Transformer encoders with learned positions.

RoBERTa differs from BERT only in its position ids (counted from `pad_token_id + 1`, skipping
padding) and its heads' names and shapes.

    >>> from zoohub.backbones import get_family
    >>> get_family("roberta").heads["text_classifier"].architecture
    'RobertaForSequenceClassification'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, dropout, embedding, layer_norm, linear, padding_mask


@dataclass(frozen=True, kw_only=True)
class BertConfig(ModelConfig):
    """BERT encoder hyperparameters; fields are `BertConfig` keys of transformers.

    >>> BertConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80}).layer_norm_eps
    1e-12
    """

    MODEL_TYPE = "bert"
    CHECKS = {
        "position_embedding_type": (lambda v: v in (None, "absolute"), "'absolute'"),
        "is_decoder": (lambda v: not v, "False (encoder only)"),
    }
    POSITIONS_AFTER_PADDING: ClassVar[bool] = False
    """RoBERTa numbers real tokens from `pad_token_id + 1`; BERT counts from 0."""

    vocab_size: int
    hidden_size: int          # D
    num_hidden_layers: int
    num_attention_heads: int  # N
    intermediate_size: int    # F
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"  # transformers' "gelu" is the exact erf GELU
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")


@dataclass(frozen=True, kw_only=True)
class RobertaConfig(BertConfig):
    """RoBERTa: BERT math, positions counted from `pad_token_id + 1`.

    >>> RobertaConfig.from_hf({"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1,
    ...     "num_attention_heads": 2, "intermediate_size": 16}).pad_token_id
    1
    """

    MODEL_TYPE = "roberta"
    POSITIONS_AFTER_PADDING = True
    pad_token_id: int | None = 1


@dataclass(frozen=True, kw_only=True)
class XLMRobertaConfig(RobertaConfig):
    """XLM-RoBERTa: RoBERTa with a multilingual vocabulary (the same math)."""

    MODEL_TYPE = "xlm-roberta"


def _position_ids(config: BertConfig, input_ids, attention_mask):
    xp = ops().xp
    b, t = input_ids.shape
    if not config.POSITIONS_AFTER_PADDING:
        return xp.broadcast_to(xp.arange(t)[None], (b, t))
    # RoBERTa numbers real tokens from pad_token_id + 1; padding keeps pad_token_id.
    real = (input_ids != config.pad_token_id).astype(xp.int32)
    return xp.cumsum(real, axis=1) * real + config.pad_token_id


def forward(params, config: BertConfig, inputs, *, rng=None):
    """Hidden states [B, T, D] for inputs {input_ids, attention_mask, token_type_ids?}."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = xp.ones_like(ids)
    types = inputs.get("token_type_ids")
    if types is None:
        types = xp.zeros_like(ids)
    positions = inputs.get("position_ids")
    if positions is None:
        positions = _position_ids(config, ids, mask)
    emb = params["embeddings"]
    x = (embedding(emb["word_embeddings"], ids) + embedding(emb["position_embeddings"], positions)
         + embedding(emb["token_type_embeddings"], types))
    x = layer_norm(emb["LayerNorm"], x, eps=config.layer_norm_eps)
    x = dropout(x, config.hidden_dropout_prob, keys())
    return encoder_layers(params["encoder"], config, x, mask, keys)


def encoder_layers(params, config: BertConfig, x, mask, keys: KeyStream):
    """BERT's post-norm layer stack under `encoder.layer.{i}` (ELECTRA runs it too): [B, T, D] -> [B, T, D]."""
    b, t, d = x.shape
    n = config.num_attention_heads
    attn_mask = padding_mask(mask)
    act = activation(config.hidden_act)
    for i in range(config.num_hidden_layers):
        layer = params["layer"][str(i)]
        sa = layer["attention"]["self"]
        q, k, v = (linear(sa[name], x).reshape(b, t, n, d // n) for name in ("query", "key", "value"))
        a = attention(q, k, v, scale=(d // n) ** -0.5, mask=attn_mask)
        # transformers drops attention probabilities; dropping the output is close but not identical.
        a = dropout(linear(layer["attention"]["output"]["dense"], a.reshape(b, t, d)), config.hidden_dropout_prob, keys())
        x = layer_norm(layer["attention"]["output"]["LayerNorm"], a + x, eps=config.layer_norm_eps)
        h = linear(layer["output"]["dense"], act(linear(layer["intermediate"]["dense"], x)))
        h = dropout(h, config.hidden_dropout_prob, keys())
        x = layer_norm(layer["output"]["LayerNorm"], h + x, eps=config.layer_norm_eps)
    return x


def shapes(c: BertConfig) -> dict[str, tuple]:
    d, f = c.hidden_size, c.intermediate_size
    out = {
        "embeddings.word_embeddings.weight": (c.vocab_size, d),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, d),
        "embeddings.token_type_embeddings.weight": (c.type_vocab_size, d),
        "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            out[p + f"attention.self.{name}.weight"] = (d, d)
            out[p + f"attention.self.{name}.bias"] = (d,)
        out.update({
            p + "attention.output.dense.weight": (d, d), p + "attention.output.dense.bias": (d,),
            p + "attention.output.LayerNorm.weight": (d,), p + "attention.output.LayerNorm.bias": (d,),
            p + "intermediate.dense.weight": (f, d), p + "intermediate.dense.bias": (f,),
            p + "output.dense.weight": (d, f), p + "output.dense.bias": (d,),
            p + "output.LayerNorm.weight": (d,), p + "output.LayerNorm.bias": (d,),
        })
    return out


def pooler_shapes(c: BertConfig) -> dict[str, tuple]:
    return {"pooler.dense.weight": (c.hidden_size, c.hidden_size), "pooler.dense.bias": (c.hidden_size,)}


def _classifier_dropout(c: BertConfig) -> float:
    return c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob


# ---- heads -------------------------------------------------------------------------------------

def bert_classifier(params, c: BertConfig, hidden, inputs, *, rng=None):
    xp = ops().xp
    pooled = xp.tanh(linear(params["bert"]["pooler"]["dense"], hidden[:, 0]))
    return linear(params["classifier"], dropout(pooled, _classifier_dropout(c), rng))


def roberta_classifier(params, c: BertConfig, hidden, inputs, *, rng=None):
    xp = ops().xp
    keys = KeyStream(rng)
    x = dropout(hidden[:, 0], _classifier_dropout(c), keys())
    x = dropout(xp.tanh(linear(params["classifier"]["dense"], x)), _classifier_dropout(c), keys())
    return linear(params["classifier"]["out_proj"], x)


def bert_masked_lm(params, c: BertConfig, hidden, inputs, *, rng=None):
    head = params["cls"]["predictions"]
    x = activation(c.hidden_act)(linear(head["transform"]["dense"], hidden))
    x = layer_norm(head["transform"]["LayerNorm"], x, eps=c.layer_norm_eps)
    return linear(head["decoder"], x) + head["bias"]


def roberta_masked_lm(params, c: BertConfig, hidden, inputs, *, rng=None):
    head = params["lm_head"]
    x = activation("gelu")(linear(head["dense"], hidden))  # RobertaLMHead always uses exact GELU
    x = layer_norm(head["layer_norm"], x, eps=c.layer_norm_eps)
    return linear(head["decoder"], x) + head["bias"]


# Megatron-style split over "model" of torch Linear weights [out, in] (see zoohub.backbones.decoder).
SHARDING = (
    (r"\.(query|key|value|intermediate\.dense)\.weight$", ("model", None)),
    (r"\.(query|key|value|intermediate\.dense)\.bias$", ("model",)),
    (r"\.(attention\.output\.dense|layer\.\d+\.output\.dense)\.weight$", (None, "model")),
    (r"word_embeddings\.weight$", ("model", None)),
    (r"(position_embeddings|token_type_embeddings)\.weight$", ()),
)


def _recipe(config: str, seed: int, **changes) -> TinyRecipe:
    kwargs = dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
                  max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-7, initializer_range=0.5,
                  hidden_act="gelu", num_labels=3)
    tokenizer = "wordpiece" if config == "BertConfig" else "byte_bpe"
    return TinyRecipe(config=config, kwargs={**kwargs, **changes}, seed=seed, tokenizer=tokenizer)


# RoBERTa's recipe: a byte-level vocabulary, positions after the padding id, the tanh GELU.
_ROBERTA = dict(vocab_size=300, max_position_embeddings=42, type_vocab_size=1, layer_norm_eps=1e-6,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu_new")


def _family(model_type: str, config_class, prefix: str, arch: str, recipe: TinyRecipe) -> Family:
    is_bert = not config_class.POSITIONS_AFTER_PADDING  # BERT's heads, segments and position table
    d = lambda c: c.hidden_size  # noqa: E731
    if is_bert:
        classifier = Head(
            task="text_classifier", architecture=f"{arch}ForSequenceClassification", apply=bert_classifier,
            trained_with_lora=("classifier",),
            shapes=lambda c, n: {"classifier.weight": (n, d(c)), "classifier.bias": (n,)},
            backbone_extras=("pooler.dense.weight", "pooler.dense.bias"),
        )
        masked_lm = Head(
            task="masked_lm", architecture=f"{arch}ForMaskedLM", apply=bert_masked_lm,
            shapes=lambda c, n: {
                "cls.predictions.transform.dense.weight": (d(c), d(c)), "cls.predictions.transform.dense.bias": (d(c),),
                "cls.predictions.transform.LayerNorm.weight": (d(c),), "cls.predictions.transform.LayerNorm.bias": (d(c),),
                "cls.predictions.bias": (c.vocab_size,), "cls.predictions.decoder.weight": (c.vocab_size, d(c)),
            },
            tied=("cls.predictions.decoder.weight",),
            ignored=(r"^cls\.predictions\.decoder\.bias$",),
        )
    else:
        classifier = Head(
            task="text_classifier", architecture=f"{arch}ForSequenceClassification", apply=roberta_classifier,
            trained_with_lora=("classifier",),
            shapes=lambda c, n: {
                "classifier.dense.weight": (d(c), d(c)), "classifier.dense.bias": (d(c),),
                "classifier.out_proj.weight": (n, d(c)), "classifier.out_proj.bias": (n,),
            },
        )
        masked_lm = Head(
            task="masked_lm", architecture=f"{arch}ForMaskedLM", apply=roberta_masked_lm,
            shapes=lambda c, n: {
                "lm_head.dense.weight": (d(c), d(c)), "lm_head.dense.bias": (d(c),),
                "lm_head.layer_norm.weight": (d(c),), "lm_head.layer_norm.bias": (d(c),),
                "lm_head.bias": (c.vocab_size,), "lm_head.decoder.weight": (c.vocab_size, d(c)),
            },
            tied=("lm_head.decoder.weight",),
            ignored=(r"^lm_head\.decoder\.bias$",),
        )
    return Family(
        model_type=model_type, config_class=config_class, prefix=prefix, base_architecture=f"{arch}Model",
        forward=forward, shapes=shapes, optional_shapes=pooler_shapes, embeddings="embeddings.word_embeddings",
        heads={"text_classifier": classifier, "masked_lm": masked_lm,
               # both families: dropout (classifier_dropout, else hidden_dropout_prob) + `classifier`; QA undropped
               "token_classifier": token_classifier(f"{arch}ForTokenClassification", width=d,
                                                    dropout_rate=_classifier_dropout),
               "question_answerer": question_answerer(f"{arch}ForQuestionAnswering", width=d)},
        lora_targets=("query", "value"), sharding=SHARDING, recipe=recipe,
        token_types=is_bert,  # RoBERTa has one segment; its tokenizers return no token_type_ids
        # RoBERTa's first pad_token_id + 1 rows are never used by real tokens.
        max_length=(lambda c: c.max_position_embeddings) if is_bert
        else (lambda c: c.max_position_embeddings - (c.pad_token_id or 0) - 1),
    )


FAMILIES = {
    "bert": _family("bert", BertConfig, "bert", "Bert", _recipe("BertConfig", 11)),
    "roberta": _family("roberta", RobertaConfig, "roberta", "Roberta", _recipe("RobertaConfig", 22, **_ROBERTA)),
    "xlm-roberta": _family("xlm-roberta", XLMRobertaConfig, "roberta", "XLMRoberta",
                           _recipe("XLMRobertaConfig", 23, **{**_ROBERTA, "hidden_act": "relu"})),
}
