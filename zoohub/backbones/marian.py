"""Marian (Helsinki-NLP's opus-mt translators): BART's post-norm layers with fixed sinusoidal
positions, no embedding layer norm, and source and target vocabularies that may be separate.

The position table is computed, never read: transformers builds it at load time and does not save
it (older files that carry it have it ignored). Its layout is `MarianSinusoidalPositionalEmbedding`'s:
the sines of all frequencies in the first half of each row, then the cosines (not interleaved).

    >>> import numpy as np
    >>> table = sinusoidal_table(3, 4)
    >>> np.allclose(table[1], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)])
    True
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from zoohub.backbones import bart
from zoohub.backbones.base import TinyRecipe
from zoohub.backend import ops


@functools.cache
def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """[P, D] float32: position p, feature j has angle p / 10000^(2 * (j // 2) / D); the sines of the
    even j come first (ceil(D / 2) columns), then the cosines of the odd j, in float64 then cast as
    transformers does."""
    j = np.arange(dim)
    angles = np.arange(num_positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    table = np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=1)
    table.setflags(write=False)
    return table.astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class MarianConfig(bart.BartConfig):
    """Marian hyperparameters; fields are `MarianConfig` keys of transformers (defaults are its defaults).

    >>> c = MarianConfig.from_hf({"vocab_size": 97, "decoder_vocab_size": 60, "d_model": 48,
    ...     "share_encoder_decoder_embeddings": False})
    >>> c.vocab_size, c.target_vocab_size
    (97, 60)
    """

    MODEL_TYPE = "marian"
    CHECKS = bart.legacy_checks(normalize_before=False, embedding_norm=False, static_positions=True)
    DEFAULT_TOKEN_IDS = {"pad_token_id": 58100, "decoder_start_token_id": 58100}

    vocab_size: int = 58101
    decoder_vocab_size: int | None = None     # the target vocabulary (None: vocab_size)
    share_encoder_decoder_embeddings: bool = True
    scale_embedding: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.share_encoder_decoder_embeddings and self.decoder_vocab_size not in (None, self.vocab_size):
            raise ValueError(f"shared embeddings need decoder_vocab_size {self.decoder_vocab_size} == vocab_size "
                             f"{self.vocab_size}")

    @property
    def target_vocab_size(self) -> int:
        return self.decoder_vocab_size or self.vocab_size

    def token_table(self, params, side: str):
        if self.share_encoder_decoder_embeddings:
            return params["shared"]["weight"]
        return params[side]["embed_tokens"]["weight"]

    def position_rows(self, params, side: str, positions):
        table = ops().asarray(sinusoidal_table(self.max_position_embeddings, self.d_model))
        return ops().xp.take(table, positions, axis=0)


def shapes(c: MarianConfig) -> dict[str, tuple]:
    d = c.d_model
    if c.share_encoder_decoder_embeddings:
        out = {"shared.weight": (c.vocab_size, d)}
    else:
        out = {"encoder.embed_tokens.weight": (c.vocab_size, d),
               "decoder.embed_tokens.weight": (c.target_vocab_size, d)}
    for side in ("encoder", "decoder"):
        out.update(bart.layer_shapes(c, side))
    return out


def tied_aliases(c: MarianConfig) -> tuple[str, ...]:
    """With shared embeddings, older files also store each stack's copy of `shared`: not read (a
    separate-vocabulary model's own tables have these names)."""
    return (bart.TIED_ALIASES,) if c.share_encoder_decoder_embeddings else ()


# Odd vocabulary and MLP sizes, 48 wide so the tensor-parallel test splits it 4 ways (the odd-width sine
# table is tested on its own), the swish activation opus-mt uses, and pad = decoder start = the last
# vocabulary row as the real checkpoints have them.
_TINY = dict(vocab_size=97, d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
             decoder_attention_heads=3, encoder_ffn_dim=80, decoder_ffn_dim=72, max_position_embeddings=64,
             init_std=0.15, activation_function="swish", scale_embedding=True,
             pad_token_id=96, decoder_start_token_id=96, eos_token_id=0, forced_eos_token_id=0, bos_token_id=None)

FAMILIES = {
    "marian": bart.family(
        "marian", MarianConfig, "Marian", TinyRecipe(config="MarianConfig", kwargs=_TINY, seed=37, tokenizer="spm"),
        shapes=shapes, ignored_by_config=tied_aliases, heads={"seq2seq_lm": bart.seq2seq_head("MarianMTModel")},
        ignored=(r"(^|\.)position_ids$", r"(^|\.)embed_positions\.weight$"), learned_positions=False),
}
