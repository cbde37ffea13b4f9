"""zoohub: a model zoo and pretrained-model hub client on NumPy and JAX.

    >>> import zoohub
    >>> "starter_bert_tiny_en" in zoohub.list_presets()
    True
    >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # bundled toy BERT: no download
    >>> clf.labels, clf.predict(["great film"]).shape
    (['negative', 'positive'], (1, 2))

Public names are imported lazily so that `import zoohub` stays fast and the
numpy backend never imports jax.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "Backbone": "zoohub.tasks.backbone",
    "TextClassifier": "zoohub.tasks.text_classifier",
    "MaskedLM": "zoohub.tasks.masked_lm",
    "TextEmbedder": "zoohub.tasks.text_embedder",
    "CausalLM": "zoohub.tasks.causal_lm",
    "Seq2SeqLM": "zoohub.tasks.seq2seq_lm",
    "ImageClassifier": "zoohub.tasks.image_classifier",
    "TokenClassifier": "zoohub.tasks.token_classifier",
    "QuestionAnswerer": "zoohub.tasks.question_answerer",
    "Reranker": "zoohub.tasks.reranker",
    "upload_preset": "zoohub.upload",
    "list_presets": "zoohub.presets.registry",
    "set_backend": "zoohub.backend",
    "get_backend": "zoohub.backend",
}

__all__ = sorted(_EXPORTS) + ["errors", "distributed", "__version__"]


def __getattr__(name: str):
    if name == "errors":
        return importlib.import_module("zoohub.errors")
    if name == "distributed":
        return importlib.import_module("zoohub.backend.distributed")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoohub' has no attribute {name!r}")


def __dir__():
    return __all__
