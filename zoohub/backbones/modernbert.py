"""ModernBERT (`modernbert`): a pre-norm encoder with RoPE, GeGLU and alternating attention.

Every `global_attn_every_n_layers`-th layer (or as `layer_types` says) attends to the whole
sequence with RoPE base `global_rope_theta`; the others see only keys within `local_attention / 2`
tokens with base `local_rope_theta`. The first layer has no attention norm (the embeddings are
normalised already); a final norm closes the stack; biases are off by default (`attention_bias`,
`mlp_bias`, `norm_bias`).

transformers removes padding before flash attention ("unpadded inputs") and runs SDPA on the padded
batch with a mask otherwise; the math is the same. zoohub runs the padded batch with a padding mask
(static shapes, one compiled program per length bucket), combined with the window on local layers.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("modernbert")
    >>> family.prefix, family.heads["text_classifier"].architecture
    ('model', 'ModernBertForSequenceClassification')
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backend import ops
from zoohub.layers import (
    KeyStream, activation, apply_rope, attention, dropout, embedding, layer_norm, linear, padding_mask, pool,
    rope_cos_sin, rope_frequencies,
)

FULL, SLIDING = "full_attention", "sliding_attention"


def _default_rope(params) -> bool:
    return all((p or {}).get("rope_type", "default") == "default" for p in params.values())


@dataclass(frozen=True, kw_only=True)
class ModernBertConfig(ModelConfig):
    """ModernBERT hyperparameters; fields are `ModernBertConfig` keys of transformers, in either
    form found on the hub: `global_attn_every_n_layers` / `global_rope_theta` / `local_rope_theta`
    (the first checkpoints) or `layer_types` / `rope_parameters` (transformers 5), which win.

    >>> c = ModernBertConfig.from_hf({"vocab_size": 300, "hidden_size": 48, "intermediate_size": 80,
    ...     "num_hidden_layers": 4, "num_attention_heads": 3, "global_attn_every_n_layers": 2})
    >>> c.kinds(), c.theta(SLIDING), c.theta(FULL)
    (('full_attention', 'sliding_attention', 'full_attention', 'sliding_attention'), 10000.0, 160000.0)
    """

    MODEL_TYPE = "modernbert"
    CHECKS = {
        "rope_parameters": (lambda v: v is None or _default_rope(v), "default RoPE for both layer kinds"),
        "rope_scaling": (lambda v: not v, "null (no RoPE scaling)"),
    }
    # Init, flash-attention and training-only switches (sparse_prediction drops unlabeled positions
    # before the decoder: the loss is the same); old configs carry BERT keys ModernBERT never reads.
    IGNORED = frozenset({"initializer_cutoff_factor", "deterministic_flash_attn", "sparse_prediction",
                         "sparse_pred_ignore_index", "reference_compile", "repad_logits_with_grad",
                         "layer_norm_eps", "position_embedding_type"})

    vocab_size: int
    hidden_size: int          # D
    intermediate_size: int    # F (the GeGLU input projection Wi is [2F, D])
    num_hidden_layers: int
    num_attention_heads: int  # N
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    attention_dropout: float = 0.0
    head_dim: int | None = None  # must be D / N when given
    layer_types: list | None = None
    """Per layer "full_attention" or "sliding_attention"; None: from global_attn_every_n_layers."""
    global_attn_every_n_layers: int = 3
    rope_parameters: dict | None = None
    """{layer kind: {"rope_type": "default", "rope_theta": base}}; a missing base falls back below."""
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128  # the whole window: keys within local_attention // 2 on each side
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"  # or "mean" over real tokens
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    pad_token_id: int | None = 50283

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.head_dim not in (None, self.hidden_size // self.num_attention_heads):
            raise ValueError(f"head_dim {self.head_dim} != hidden_size / num_attention_heads")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling {self.classifier_pooling!r} is not 'cls' or 'mean'")
        if self.layer_types is not None and (len(self.layer_types) != self.num_hidden_layers
                                             or set(self.layer_types) - {FULL, SLIDING}):
            raise ValueError(f"layer_types {self.layer_types} is not one of {FULL!r}/{SLIDING!r} per layer")

    def kinds(self) -> tuple[str, ...]:
        if self.layer_types is not None:
            return tuple(self.layer_types)
        n = self.global_attn_every_n_layers
        return tuple(SLIDING if i % n else FULL for i in range(self.num_hidden_layers))

    def theta(self, kind: str) -> float:
        given = ((self.rope_parameters or {}).get(kind) or {}).get("rope_theta")
        return float(given if given is not None else self.global_rope_theta if kind == FULL else self.local_rope_theta)


def _window_mask(length: int, half_window: int):
    """bool [1, 1, T, T]: |i - j| <= half_window (transformers' bidirectional sliding window)."""
    xp = ops().xp
    pos = xp.arange(length)
    return (xp.abs(pos[:, None] - pos[None, :]) <= half_window)[None, None]


def forward(params, config: ModernBertConfig, inputs, *, rng=None):
    """Hidden states [B, T, D] (final norm applied) for inputs {input_ids, attention_mask, position_ids?}."""
    xp = ops().xp
    c = config
    keys = KeyStream(rng)
    ids = inputs["input_ids"]
    b, t = ids.shape
    mask = inputs.get("attention_mask")
    mask = xp.ones_like(ids) if mask is None else mask
    positions = inputs.get("position_ids")
    positions = xp.broadcast_to(xp.arange(t)[None], (b, t)) if positions is None else positions
    emb = params["embeddings"]
    x = layer_norm(emb["norm"], embedding(emb["tok_embeddings"], ids), eps=c.norm_eps)
    x = dropout(x, c.embedding_dropout, keys())

    n = c.num_attention_heads
    h = c.hidden_size // n
    kinds = c.kinds()
    keys_mask = padding_mask(mask)
    masks = {FULL: keys_mask, SLIDING: keys_mask & _window_mask(t, c.local_attention // 2)}
    rope = {kind: rope_cos_sin(positions, rope_frequencies(h, c.theta(kind))[0]) for kind in set(kinds)}
    act = activation(c.hidden_activation)
    for i, kind in enumerate(kinds):
        layer = params["layers"][str(i)]
        y = x if i == 0 else layer_norm(layer["attn_norm"], x, eps=c.norm_eps)  # layer 0: nn.Identity
        qkv = linear(layer["attn"]["Wqkv"], y).reshape(b, t, 3, n, h)
        cos, sin = rope[kind]
        q, k = apply_rope(qkv[:, :, 0], cos, sin), apply_rope(qkv[:, :, 1], cos, sin)
        a = attention(q, k, qkv[:, :, 2], scale=h ** -0.5, mask=masks[kind]).reshape(b, t, c.hidden_size)
        x = x + dropout(linear(layer["attn"]["Wo"], a), c.attention_dropout, keys())
        gate_in = linear(layer["mlp"]["Wi"], layer_norm(layer["mlp_norm"], x, eps=c.norm_eps))
        value, gate = gate_in[..., :c.intermediate_size], gate_in[..., c.intermediate_size:]
        x = x + linear(layer["mlp"]["Wo"], dropout(act(value) * gate, c.mlp_dropout, keys()))
    return layer_norm(params["final_norm"], x, eps=c.norm_eps)


def _norm(name: str, c: ModernBertConfig) -> dict[str, tuple]:
    d = c.hidden_size
    return {f"{name}.weight": (d,), **({f"{name}.bias": (d,)} if c.norm_bias else {})}


def _linear(name: str, out: int, inp: int, bias: bool) -> dict[str, tuple]:
    return {f"{name}.weight": (out, inp), **({f"{name}.bias": (out,)} if bias else {})}


def shapes(c: ModernBertConfig) -> dict[str, tuple]:
    d, f = c.hidden_size, c.intermediate_size
    out = {"embeddings.tok_embeddings.weight": (c.vocab_size, d), **_norm("embeddings.norm", c),
           **_norm("final_norm", c)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        if i:
            out.update(_norm(p + "attn_norm", c))
        out.update({**_linear(p + "attn.Wqkv", 3 * d, d, c.attention_bias), **_linear(p + "attn.Wo", d, d, c.attention_bias),
                    **_norm(p + "mlp_norm", c), **_linear(p + "mlp.Wi", 2 * f, d, c.mlp_bias),
                    **_linear(p + "mlp.Wo", d, f, c.mlp_bias)})
    return out


# ---- heads: each runs ModernBertPredictionHead (dense, classifier_activation, norm) first ---------

def _prediction_head(params, c: ModernBertConfig, x):
    x = activation(c.classifier_activation)(linear(params["head"]["dense"], x))
    return layer_norm(params["head"]["norm"], x, eps=c.norm_eps)


def _head_shapes(c: ModernBertConfig) -> dict[str, tuple]:
    return {**_linear("head.dense", c.hidden_size, c.hidden_size, c.classifier_bias), **_norm("head.norm", c)}


def masked_lm(params, c: ModernBertConfig, hidden, inputs, *, rng=None):
    return linear(params["decoder"], _prediction_head(params, c, hidden))


def classifier(params, c: ModernBertConfig, hidden, inputs, *, rng=None):
    mask = inputs.get("attention_mask") if inputs is not None else None
    mask = ops().xp.ones(hidden.shape[:2], hidden.dtype) if mask is None else mask
    pooled = pool(hidden, mask, c.classifier_pooling)
    return linear(params["classifier"], dropout(_prediction_head(params, c, pooled), c.classifier_dropout, rng))


def per_token(params, c: ModernBertConfig, hidden, inputs, *, rng=None):
    """Token classification and extractive QA: the prediction head, dropout, `classifier` on every token."""
    return linear(params["classifier"], dropout(_prediction_head(params, c, hidden), c.classifier_dropout, rng))


def _classifier_head(task: str, architecture: str, apply, outputs) -> Head:
    return Head(task=task, architecture=architecture, apply=apply, trained_with_lora=("head", "classifier"),
                shapes=lambda c, n: {**_head_shapes(c), **_linear("classifier", outputs(n), c.hidden_size, True)})


# Megatron-style split over "model". Wqkv rows are [q | k | v] and Wi rows [value | gate], so a shard
# may hold rows of two parts: the layout changes, not the result (XLA reshards at the split).
SHARDING = (
    (r"\.(Wqkv|mlp\.Wi)\.weight$", ("model", None)),
    (r"\.(Wqkv|mlp\.Wi)\.bias$", ("model",)),
    (r"\.(attn\.Wo|mlp\.Wo)\.weight$", (None, "model")),
    (r"tok_embeddings\.weight$", ("model", None)),
)

# A window (4: keys within 2 tokens) shorter than the test sentences, global and local layers with
# distinct RoPE bases, every bias and norm bias on, mean pooling, tanh-GELU classifier activation.
RECIPE = TinyRecipe(config="ModernBertConfig", seed=41, tokenizer="cls_byte_bpe", kwargs=dict(
    vocab_size=300, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
    global_attn_every_n_layers=2, local_attention=4, global_rope_theta=1000.0, local_rope_theta=50.0,
    norm_eps=1e-6, norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True, decoder_bias=True,
    classifier_pooling="mean", classifier_activation="gelu_new", hidden_activation="gelu",
    initializer_range=0.3, max_position_embeddings=256, num_labels=3,
    pad_token_id=3, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2))

FAMILIES = {"modernbert": Family(
    model_type="modernbert", config_class=ModernBertConfig, prefix="model", base_architecture="ModernBertModel",
    forward=forward, shapes=shapes, embeddings="embeddings.tok_embeddings", heads={
        "masked_lm": Head(task="masked_lm", architecture="ModernBertForMaskedLM", apply=masked_lm, tied=("decoder.weight",),
                          shapes=lambda c, n: {**_head_shapes(c), **_linear("decoder", c.vocab_size, c.hidden_size, c.decoder_bias)}),
        "text_classifier": _classifier_head("text_classifier", "ModernBertForSequenceClassification", classifier, lambda n: n),
        "token_classifier": _classifier_head("token_classifier", "ModernBertForTokenClassification", per_token, lambda n: n),
        "question_answerer": _classifier_head("question_answerer", "ModernBertForQuestionAnswering", per_token, lambda n: 2),
    },
    lora_targets=("Wqkv",), sharding=SHARDING, recipe=RECIPE, token_types=False,
    max_length=lambda c: c.max_position_embeddings,
)}
