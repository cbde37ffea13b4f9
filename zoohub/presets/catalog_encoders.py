"""Encoder presets of the second wave (MPNet, ModernBERT, DeBERTa-v3, ELECTRA, ALBERT) and the
per-token and pair tasks (NER taggers, extractive QA, rerankers), as data. Revisions pin a commit on
the Hugging Face Hub where a public one was found; `revision=None` rows follow the repo's main branch."""

ROWS: list[dict] = [
    # -- mpnet, albert, electra --
    # -- deberta-v2, modernbert --
    # -- token classification, question answering, reranking --
]
