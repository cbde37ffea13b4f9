"""ALBERT: a BERT encoder with factorized embeddings (a narrow table of width E projected to D by
`embedding_hidden_mapping_in`) and shared layers: `num_hidden_groups` groups of `inner_group_num`
layers each, the whole stack applying group `int(i / (L / G))` at step i of `num_hidden_layers`.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("albert")
    >>> family.prefix, family.heads["masked_lm"].architecture
    ('albert', 'AlbertForMaskedLM')
    >>> group_schedule(AlbertConfig.from_hf({"vocab_size": 9, "hidden_size": 8, "num_hidden_layers": 6,
    ...     "num_attention_heads": 2, "intermediate_size": 8, "num_hidden_groups": 4}))
    [0, 0, 1, 2, 2, 3]
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, dropout, embedding, layer_norm, linear, padding_mask


@dataclass(frozen=True, kw_only=True)
class AlbertConfig(ModelConfig):
    """ALBERT hyperparameters; fields are `AlbertConfig` keys of transformers.

    >>> AlbertConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80}).hidden_act
    'gelu_new'
    """

    MODEL_TYPE = "albert"
    CHECKS = {
        # transformers 4 configs carry it; 5 only implements absolute positions
        "position_embedding_type": (lambda v: v in (None, "absolute"), "'absolute'"),
    }

    vocab_size: int
    embedding_size: int = 128  # E: width of the embedding tables and of the masked-LM head
    hidden_size: int           # D
    num_hidden_layers: int     # L: steps through the groups
    num_hidden_groups: int = 1  # G: distinct groups of weights
    inner_group_num: int = 1   # layers in each group
    num_attention_heads: int   # N
    intermediate_size: int     # F
    hidden_act: str = "gelu_new"  # the tanh GELU
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float | None = 0.1
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.num_hidden_groups < 1 or self.inner_group_num < 1:
            raise ValueError(f"num_hidden_groups={self.num_hidden_groups} and inner_group_num="
                             f"{self.inner_group_num} must be at least 1")


def group_schedule(c: AlbertConfig) -> list[int]:
    """The group each of the `num_hidden_layers` steps applies, with transformers' float division."""
    return [int(i / (c.num_hidden_layers / c.num_hidden_groups)) for i in range(c.num_hidden_layers)]


def _layer(layer, c: AlbertConfig, x, attn_mask, keys):
    b, t, d = x.shape
    n = c.num_attention_heads
    sa = layer["attention"]
    q, k, v = (linear(sa[name], x).reshape(b, t, n, d // n) for name in ("query", "key", "value"))
    a = attention(q, k, v, scale=(d // n) ** -0.5, mask=attn_mask)
    a = dropout(linear(sa["dense"], a.reshape(b, t, d)), c.hidden_dropout_prob, keys())
    x = layer_norm(sa["LayerNorm"], x + a, eps=c.layer_norm_eps)
    h = linear(layer["ffn_output"], activation(c.hidden_act)(linear(layer["ffn"], x)))
    # AlbertLayer has a dropout module but never applies it to the feed-forward output
    return layer_norm(layer["full_layer_layer_norm"], h + x, eps=c.layer_norm_eps)


def forward(params, config: AlbertConfig, inputs, *, rng=None):
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
        positions = xp.broadcast_to(xp.arange(ids.shape[1])[None], ids.shape)
    emb = params["embeddings"]
    x = (embedding(emb["word_embeddings"], ids) + embedding(emb["token_type_embeddings"], types)
         + embedding(emb["position_embeddings"], positions))                                     # [B, T, E]
    x = dropout(layer_norm(emb["LayerNorm"], x, eps=config.layer_norm_eps), config.hidden_dropout_prob, keys())
    encoder = params["encoder"]
    x = linear(encoder["embedding_hidden_mapping_in"], x)                                        # [B, T, D]
    attn_mask = padding_mask(mask)
    for g in group_schedule(config):
        group = encoder["albert_layer_groups"][str(g)]["albert_layers"]
        for j in range(config.inner_group_num):
            x = _layer(group[str(j)], config, x, attn_mask, keys)
    return x


def shapes(c: AlbertConfig) -> dict[str, tuple]:
    e, d, f = c.embedding_size, c.hidden_size, c.intermediate_size
    out = {
        "embeddings.word_embeddings.weight": (c.vocab_size, e),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, e),
        "embeddings.token_type_embeddings.weight": (c.type_vocab_size, e),
        "embeddings.LayerNorm.weight": (e,), "embeddings.LayerNorm.bias": (e,),
        "encoder.embedding_hidden_mapping_in.weight": (d, e), "encoder.embedding_hidden_mapping_in.bias": (d,),
    }
    for g in range(c.num_hidden_groups):
        for j in range(c.inner_group_num):
            p = f"encoder.albert_layer_groups.{g}.albert_layers.{j}."
            for name in ("query", "key", "value", "dense"):
                out[p + f"attention.{name}.weight"] = (d, d)
                out[p + f"attention.{name}.bias"] = (d,)
            out.update({
                p + "attention.LayerNorm.weight": (d,), p + "attention.LayerNorm.bias": (d,),
                p + "ffn.weight": (f, d), p + "ffn.bias": (f,),
                p + "ffn_output.weight": (d, f), p + "ffn_output.bias": (d,),
                p + "full_layer_layer_norm.weight": (d,), p + "full_layer_layer_norm.bias": (d,),
            })
    return out


def pooler_shapes(c: AlbertConfig) -> dict[str, tuple]:
    """AlbertModel's pooler (a bare Linear, then tanh): the sequence classifier reads it."""
    return {"pooler.weight": (c.hidden_size, c.hidden_size), "pooler.bias": (c.hidden_size,)}


def _classifier_dropout(c: AlbertConfig) -> float:
    return c.classifier_dropout_prob if c.classifier_dropout_prob is not None else c.hidden_dropout_prob


# ---- heads -------------------------------------------------------------------------------------

def classifier(params, c: AlbertConfig, hidden, inputs, *, rng=None):
    xp = ops().xp
    pooled = xp.tanh(linear(params["albert"]["pooler"], hidden[:, 0]))
    return linear(params["classifier"], dropout(pooled, c.classifier_dropout_prob or 0.0, rng))


def masked_lm(params, c: AlbertConfig, hidden, inputs, *, rng=None):
    head = params["predictions"]
    x = activation(c.hidden_act)(linear(head["dense"], hidden))                                 # [B, T, E]
    x = layer_norm(head["LayerNorm"], x, eps=c.layer_norm_eps)
    return linear(head["decoder"], x) + head["bias"]


def _heads() -> dict[str, Head]:
    d, e = (lambda c: c.hidden_size), (lambda c: c.embedding_size)
    return {
        "text_classifier": Head(
            task="text_classifier", architecture="AlbertForSequenceClassification", apply=classifier,
            trained_with_lora=("classifier",), backbone_extras=("pooler.weight", "pooler.bias"),
            shapes=lambda c, n: {"classifier.weight": (n, d(c)), "classifier.bias": (n,)}),
        "masked_lm": Head(
            task="masked_lm", architecture="AlbertForMaskedLM", apply=masked_lm,
            shapes=lambda c, n: {
                "predictions.dense.weight": (e(c), d(c)), "predictions.dense.bias": (e(c),),
                "predictions.LayerNorm.weight": (e(c),), "predictions.LayerNorm.bias": (e(c),),
                "predictions.bias": (c.vocab_size,), "predictions.decoder.weight": (c.vocab_size, e(c)),
            },
            tied=("predictions.decoder.weight",),
            # an alias of predictions.bias; AlbertForPreTraining's sentence-order head is another task's
            ignored=(r"^predictions\.decoder\.bias$",),
        ),
        "token_classifier": token_classifier("AlbertForTokenClassification", width=d,
                                             dropout_rate=_classifier_dropout),
        "question_answerer": question_answerer("AlbertForQuestionAnswering", width=d),
    }


# Megatron-style split over "model" of torch Linear weights [out, in]; the shared layers split once.
SHARDING = (
    (r"\.attention\.(query|key|value)\.weight$", ("model", None)),
    (r"\.attention\.(query|key|value)\.bias$", ("model",)),
    (r"\.ffn\.weight$", ("model", None)),
    (r"\.ffn\.bias$", ("model",)),
    (r"\.(attention\.dense|ffn_output)\.weight$", (None, "model")),
    (r"word_embeddings\.weight$", ("model", None)),
    (r"(position_embeddings|token_type_embeddings)\.weight$", ()),
)

RECIPE = TinyRecipe(
    config="AlbertConfig", seed=41, tokenizer="unigram",
    # 3 steps over 2 groups of 2 layers: groups are applied [0, 0, 1], so a wrong schedule shows
    kwargs=dict(vocab_size=97, embedding_size=20, hidden_size=48, num_hidden_layers=3, num_hidden_groups=2,
                inner_group_num=2, num_attention_heads=3, intermediate_size=80, max_position_embeddings=40,
                type_vocab_size=2, layer_norm_eps=1e-7, initializer_range=0.3, hidden_act="gelu_new",
                classifier_dropout_prob=0.1, num_labels=3, pad_token_id=0, bos_token_id=2, eos_token_id=3),
)

FAMILIES = {
    "albert": Family(
        model_type="albert", config_class=AlbertConfig, prefix="albert", base_architecture="AlbertModel",
        forward=forward, shapes=shapes, optional_shapes=pooler_shapes, embeddings="embeddings.word_embeddings",
        heads=_heads(), lora_targets=("query", "value"), sharding=SHARDING, recipe=RECIPE,
        # AlbertTokenizer returns no token_type_ids, so transformers runs ALBERT on segment 0 throughout
        token_types=False,
    ),
}
