"""ELECTRA: BERT's encoder behind embeddings of their own width E, projected to D by
`embeddings_project` when E != D (the small generators and discriminators), with its own heads.

The discriminator (`ElectraForPreTraining`, e.g. google/electra-base-discriminator) loads as a
Backbone, or under a new classifier head; its replaced-token head is another task's and is left unused.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("electra")
    >>> family.prefix, family.heads["masked_lm"].architecture, family.heads["masked_lm"].tied
    ('electra', 'ElectraForMaskedLM', ('generator_lm_head.weight',))
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones import bert
from zoohub.backbones.base import Family, Head, TinyRecipe
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, dropout, embedding, layer_norm, linear


@dataclass(frozen=True, kw_only=True)
class ElectraConfig(bert.BertConfig):
    """ELECTRA hyperparameters: BERT's plus `embedding_size`; fields are `ElectraConfig` keys.

    >>> ElectraConfig.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80}).embedding_size
    128
    """

    MODEL_TYPE = "electra"
    # ElectraSequenceSummary's settings: only ElectraForMultipleChoice reads them, a head zoohub has not
    IGNORED = frozenset({"summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout"})

    embedding_size: int = 128  # E


def _projects(c: ElectraConfig) -> bool:
    """ElectraModel has `embeddings_project` only when the widths differ."""
    return c.embedding_size != c.hidden_size


def forward(params, config: ElectraConfig, inputs, *, rng=None):
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
    if _projects(config):
        x = linear(params["embeddings_project"], x)                                              # [B, T, D]
    return bert.encoder_layers(params["encoder"], config, x, mask, keys)  # BERT's layers, under BERT's names


def shapes(c: ElectraConfig) -> dict[str, tuple]:
    e, d = c.embedding_size, c.hidden_size
    out = bert.shapes(c)
    out.update({
        "embeddings.word_embeddings.weight": (c.vocab_size, e),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, e),
        "embeddings.token_type_embeddings.weight": (c.type_vocab_size, e),
        "embeddings.LayerNorm.weight": (e,), "embeddings.LayerNorm.bias": (e,),
    })
    if _projects(c):
        out.update({"embeddings_project.weight": (d, e), "embeddings_project.bias": (d,)})
    return out


_classifier_dropout = bert._classifier_dropout  # the same config fields


# ---- heads -------------------------------------------------------------------------------------

def classifier(params, c: ElectraConfig, hidden, inputs, *, rng=None):
    keys = KeyStream(rng)
    head = params["classifier"]
    x = dropout(hidden[:, 0], _classifier_dropout(c), keys())
    # ElectraClassificationHead: the exact GELU where BERT's pooler has tanh, whatever hidden_act says
    x = dropout(activation("gelu")(linear(head["dense"], x)), _classifier_dropout(c), keys())
    return linear(head["out_proj"], x)


def masked_lm(params, c: ElectraConfig, hidden, inputs, *, rng=None):
    head = params["generator_predictions"]
    x = activation("gelu")(linear(head["dense"], hidden))  # ElectraGeneratorPredictions: always exact GELU
    x = layer_norm(head["LayerNorm"], x, eps=c.layer_norm_eps)                                  # [B, T, E]
    return linear(params["generator_lm_head"], x)


def _heads() -> dict[str, Head]:
    d, e = (lambda c: c.hidden_size), (lambda c: c.embedding_size)
    return {
        "text_classifier": Head(
            task="text_classifier", architecture="ElectraForSequenceClassification", apply=classifier,
            trained_with_lora=("classifier",),
            shapes=lambda c, n: {"classifier.dense.weight": (d(c), d(c)), "classifier.dense.bias": (d(c),),
                                 "classifier.out_proj.weight": (n, d(c)), "classifier.out_proj.bias": (n,)}),
        "masked_lm": Head(
            task="masked_lm", architecture="ElectraForMaskedLM", apply=masked_lm,
            shapes=lambda c, n: {
                "generator_predictions.dense.weight": (e(c), d(c)), "generator_predictions.dense.bias": (e(c),),
                "generator_predictions.LayerNorm.weight": (e(c),), "generator_predictions.LayerNorm.bias": (e(c),),
                "generator_lm_head.weight": (c.vocab_size, e(c)), "generator_lm_head.bias": (c.vocab_size,),
            },
            tied=("generator_lm_head.weight",),
        ),
        "token_classifier": token_classifier("ElectraForTokenClassification", width=d,
                                             dropout_rate=_classifier_dropout),
        "question_answerer": question_answerer("ElectraForQuestionAnswering", width=d),
    }


# BERT's rules for the layers; the E -> D projection is small and stays replicated.
SHARDING = ((r"embeddings_project\.(weight|bias)$", ()),) + bert.SHARDING

RECIPE = TinyRecipe(
    config="ElectraConfig", seed=51, tokenizer="wordpiece",
    kwargs=dict(vocab_size=97, embedding_size=20, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=80, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-7,
                initializer_range=0.3, hidden_act="gelu_new", num_labels=3),
)

FAMILIES = {
    "electra": Family(
        model_type="electra", config_class=ElectraConfig, prefix="electra", base_architecture="ElectraModel",
        forward=forward, shapes=shapes, embeddings="embeddings.word_embeddings", heads=_heads(),
        lora_targets=("query", "value"), sharding=SHARDING, recipe=RECIPE, token_types=True,
    ),
}
