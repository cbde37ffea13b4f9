"""mBART (mbart-large-cc25, mbart-large-50 and their translation fine-tunes): BART's tensors and
positions with pre-norm layers and a final layer norm after each stack.

mBART has no single decoder start token: `MBartModel`, given no decoder inputs, shifts the inputs
right and wraps each row's last real token (its language code or `</s>`) to the front.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("mbart")
    >>> family.heads["seq2seq_lm"].architecture, family.config_class.PRE_NORM
    ('MBartForConditionalGeneration', True)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones import bart
from zoohub.backbones.base import TinyRecipe
from zoohub.backend import ops


@dataclass(frozen=True, kw_only=True)
class MBartConfig(bart.BartConfig):
    """mBART hyperparameters; fields are `MBartConfig` keys of transformers (BART's).

    >>> MBartConfig.from_hf({"d_model": 48, "encoder_attention_heads": 3, "decoder_attention_heads": 3,
    ...     "normalize_before": True}).PRE_NORM
    True
    """

    MODEL_TYPE = "mbart"
    CHECKS = bart.legacy_checks(normalize_before=True, embedding_norm=True, static_positions=False)
    PRE_NORM = True


def shift_wrapping_last(ids, c: MBartConfig):
    """transformers' mBART `shift_tokens_right`: ids[:, :-1] after each row's last non-pad token."""
    xp = ops().xp
    pad = c.token_id("pad_token_id")
    ids = xp.where(ids == -100, pad, ids)
    last = (ids != pad).sum(axis=1) - 1
    start = xp.take_along_axis(ids, last[:, None], axis=1)
    return xp.concatenate([start, ids[:, :-1]], axis=1)


def forward(params, c: MBartConfig, inputs, *, rng=None):
    """`bart.forward`, with mBART's default decoder inputs."""
    if inputs.get("decoder_input_ids") is None:
        inputs = {**inputs, "decoder_input_ids": shift_wrapping_last(inputs["input_ids"], c)}
    return bart.forward(params, c, inputs, rng=rng)


_TINY = dict(bart.TINY, activation_function="gelu_new", init_std=0.25, decoder_ffn_dim=88)

FAMILIES = {
    "mbart": bart.family("mbart", MBartConfig, "MBart",
                         TinyRecipe(config="MBartConfig", kwargs=_TINY, seed=43, tokenizer="byte_bpe"),
                         forward=forward),
}
