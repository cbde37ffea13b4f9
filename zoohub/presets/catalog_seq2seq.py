"""Encoder-decoder presets (T5, Flan-T5, mT5, BART, Marian), as data. Revisions pin a commit on the
Hugging Face Hub where a public one was found; `revision=None` rows follow the repo's main branch."""

ROWS: list[dict] = [
    # -- t5, flan-t5, mt5 --
    # -- bart, marian --
]
