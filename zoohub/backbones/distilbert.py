"""DistilBERT: BERT without token types or pooler, with its own tensor names.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("distilbert")
    >>> family.prefix, family.token_types, sorted(family.heads)
    ('distilbert', False, ['masked_lm', 'question_answerer', 'text_classifier', 'token_classifier'])
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backbones.heads import question_answerer, token_classifier
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, attention, dropout, embedding, layer_norm, linear, padding_mask

# DistilBERT hard-codes its LayerNorm epsilon; it is not in the config.
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True, kw_only=True)
class DistilBertConfig(ModelConfig):
    """DistilBERT hyperparameters (transformers' own short names: dim, n_layers, n_heads, hidden_dim).

    >>> DistilBertConfig.from_hf({"vocab_size": 97, "dim": 48, "n_layers": 2, "n_heads": 3,
    ...     "hidden_dim": 80}).activation
    'gelu'
    """

    MODEL_TYPE = "distilbert"
    # A 2019-era flag; tying is `tie_word_embeddings` (transformers no longer reads this one).
    IGNORED = frozenset({"tie_weights_"})

    vocab_size: int
    dim: int                 # D
    n_layers: int
    n_heads: int             # N
    hidden_dim: int          # F
    max_position_embeddings: int = 512
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    qa_dropout: float = 0.1
    initializer_range: float = 0.02
    # Sinusoidal tables are stored in the checkpoint like learned ones, so both load the same way.
    sinusoidal_pos_embds: bool = False

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by {self.n_heads} heads")


def forward(params, config: DistilBertConfig, inputs, *, rng=None):
    """Hidden states [B, T, D] for inputs {input_ids, attention_mask}."""
    xp = ops().xp
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = xp.ones_like(ids)
    b, t = ids.shape
    positions = inputs.get("position_ids")
    if positions is None:
        positions = xp.broadcast_to(xp.arange(t)[None], (b, t))
    emb = params["embeddings"]
    x = embedding(emb["word_embeddings"], ids) + embedding(emb["position_embeddings"], positions)
    x = dropout(layer_norm(emb["LayerNorm"], x, eps=LAYER_NORM_EPS), config.dropout, keys())
    d, n = config.dim, config.n_heads
    attn_mask = padding_mask(mask)
    act = activation(config.activation)
    for i in range(config.n_layers):
        layer = params["transformer"]["layer"][str(i)]
        att = layer["attention"]
        q, k, v = (linear(att[name], x).reshape(b, t, n, d // n) for name in ("q_lin", "k_lin", "v_lin"))
        a = linear(att["out_lin"], attention(q, k, v, scale=(d // n) ** -0.5, mask=attn_mask).reshape(b, t, d))
        x = layer_norm(layer["sa_layer_norm"], dropout(a, config.dropout, keys()) + x, eps=LAYER_NORM_EPS)
        h = linear(layer["ffn"]["lin2"], act(linear(layer["ffn"]["lin1"], x)))
        x = layer_norm(layer["output_layer_norm"], dropout(h, config.dropout, keys()) + x, eps=LAYER_NORM_EPS)
    return x


def shapes(c: DistilBertConfig) -> dict[str, tuple]:
    d, f = c.dim, c.hidden_dim
    out = {
        "embeddings.word_embeddings.weight": (c.vocab_size, d),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, d),
        "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(c.n_layers):
        p = f"transformer.layer.{i}."
        for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
            out[p + f"attention.{name}.weight"] = (d, d)
            out[p + f"attention.{name}.bias"] = (d,)
        out.update({
            p + "sa_layer_norm.weight": (d,), p + "sa_layer_norm.bias": (d,),
            p + "ffn.lin1.weight": (f, d), p + "ffn.lin1.bias": (f,),
            p + "ffn.lin2.weight": (d, f), p + "ffn.lin2.bias": (d,),
            p + "output_layer_norm.weight": (d,), p + "output_layer_norm.bias": (d,),
        })
    return out


def classifier(params, c: DistilBertConfig, hidden, inputs, *, rng=None):
    xp = ops().xp
    x = xp.maximum(linear(params["pre_classifier"], hidden[:, 0]), 0)
    return linear(params["classifier"], dropout(x, c.seq_classif_dropout, rng))


def masked_lm(params, c: DistilBertConfig, hidden, inputs, *, rng=None):
    x = activation(c.activation)(linear(params["vocab_transform"], hidden))
    x = layer_norm(params["vocab_layer_norm"], x, eps=LAYER_NORM_EPS)
    return linear(params["vocab_projector"], x)


FAMILIES = {
    "distilbert": Family(
        model_type="distilbert", config_class=DistilBertConfig, prefix="distilbert",
        base_architecture="DistilBertModel", forward=forward, shapes=shapes,
        heads={
            "text_classifier": Head(
                task="text_classifier", architecture="DistilBertForSequenceClassification", apply=classifier,
                trained_with_lora=("classifier",),
                shapes=lambda c, n: {"pre_classifier.weight": (c.dim, c.dim), "pre_classifier.bias": (c.dim,),
                                     "classifier.weight": (n, c.dim), "classifier.bias": (n,)},
            ),
            "masked_lm": Head(
                task="masked_lm", architecture="DistilBertForMaskedLM", apply=masked_lm,
                shapes=lambda c, n: {
                    "vocab_transform.weight": (c.dim, c.dim), "vocab_transform.bias": (c.dim,),
                    "vocab_layer_norm.weight": (c.dim,), "vocab_layer_norm.bias": (c.dim,),
                    "vocab_projector.weight": (c.vocab_size, c.dim), "vocab_projector.bias": (c.vocab_size,),
                },
                tied=("vocab_projector.weight",),
            ),
            # token classification drops out with `dropout`, extractive QA with its own `qa_dropout`
            "token_classifier": token_classifier("DistilBertForTokenClassification", width=lambda c: c.dim,
                                                 dropout_rate=lambda c: c.dropout),
            "question_answerer": question_answerer("DistilBertForQuestionAnswering", width=lambda c: c.dim,
                                                   dropout_rate=lambda c: c.qa_dropout),
        },
        embeddings="embeddings.word_embeddings", lora_targets=("q_lin", "v_lin"),
        sharding=(
            (r"\.(q_lin|k_lin|v_lin|lin1)\.weight$", ("model", None)),
            (r"\.(q_lin|k_lin|v_lin|lin1)\.bias$", ("model",)),
            (r"\.(out_lin|lin2)\.weight$", (None, "model")),
            (r"word_embeddings\.weight$", ("model", None)),
        ),
        recipe=TinyRecipe(config="DistilBertConfig", seed=33, tokenizer="wordpiece", kwargs=dict(
            vocab_size=97, dim=48, n_layers=2, n_heads=3, hidden_dim=80, max_position_embeddings=40,
            initializer_range=0.4, activation="gelu", num_labels=3)),
    ),
}
