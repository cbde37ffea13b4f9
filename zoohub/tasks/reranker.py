"""Reranker: a cross-encoder (a `...ForSequenceClassification` checkpoint read on (query, passage)
pairs) that scores relevance and reorders passages, as sentence-transformers' CrossEncoder does."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoohub.errors import InputError, UnsupportedConfigError
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.text_classifier import TextClassifier
from zoohub.tasks.text_task import as_text_list

# sentence-transformers names the activation on a cross-encoder's logit by its torch class path.
ACTIVATIONS = {
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Identity": lambda x: x,
    "Tanh": np.tanh,
}


def _activation_name(extra: dict, num_classes: int) -> str:
    """The config's activation (sentence-transformers >= 4 `sentence_transformers.activation_fn`, older
    `sbert_ce_default_activation_function`), else CrossEncoder's default: Sigmoid for one label."""
    settings = extra.get("sentence_transformers")
    path = (settings.get("activation_fn") if isinstance(settings, dict) else None) \
        or extra.get("sbert_ce_default_activation_function")
    if not path:
        return "Sigmoid" if num_classes == 1 else "Softmax"
    name = str(path).rsplit(".", 1)[-1]
    if name not in ACTIVATIONS:
        raise UnsupportedConfigError(f"the cross-encoder's activation {path!r} is not one zoohub applies "
                                     f"({', '.join(ACTIVATIONS)}); pass activation= to from_preset")
    return name


class Reranker(TextClassifier):
    """Score (query, passage) pairs with a cross-encoder and rerank passages by relevance.

    Scores: with one label, the logit through the checkpoint's activation (sentence-transformers'
    default: a sigmoid); with more, the softmax probability of `relevant_label` (default: the last
    class). Args of `from_preset`: `activation` ("Sigmoid", "Identity", "Tanh", "Softmax"), `relevant_label`
    (a label name or index), `sequence_length`, `batch_size`.

    Example:
        >>> import zoohub
        >>> reranker = zoohub.Reranker.from_preset("starter_bert_tiny_en")   # bundled toy: its scores mean nothing
        >>> reranker.score("a great film", ["great film", "awful film"]).shape
        (2,)
        >>> ranked = reranker.rerank("a great film", ["great film", "awful film", "i loved it"], top_k=2)
        >>> [sorted(r) for r in ranked], ranked[0]["score"] >= ranked[1]["score"]
        ([['index', 'score', 'text'], ['index', 'score', 'text']], True)
    """

    def _configure(self, activation: str | None = None, relevant_label: str | int | None = None, **options) -> None:
        super()._configure(**options)
        if activation is not None and activation not in (*ACTIVATIONS, "Softmax"):
            raise InputError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}, Softmax")
        self.activation = activation or _activation_name(self.config.extra, self.num_classes)
        if relevant_label is None:
            self.relevant_class = self.num_classes - 1
        elif isinstance(relevant_label, str):
            if relevant_label not in self.labels:
                raise InputError(f"relevant_label {relevant_label!r} is not one of {self.labels}")
            self.relevant_class = self.labels.index(relevant_label)
        elif 0 <= relevant_label < self.num_classes:
            self.relevant_class = int(relevant_label)
        else:
            raise InputError(f"relevant_label {relevant_label} is out of range for {self.num_classes} classes")

    def score(self, query: str | Sequence, passages: Sequence[str] | None = None) -> np.ndarray:
        """Relevance [N] of each passage to the query; or of each (query, passage) pair when given one list."""
        if passages is None:
            pairs = list(query)
            if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
                raise InputError("score(pairs) takes a list of (query, passage) pairs; or call score(query, passages)")
            queries, passages = [str(q) for q, _ in pairs], [str(p) for _, p in pairs]
        else:
            if not isinstance(query, str):
                raise InputError(f"query must be a string, got {type(query).__name__}")
            passages = as_text_list(passages, "passages")
            queries = [query] * len(passages)
        logits = self.logits(queries, passages).astype(np.float32)
        if self.num_classes > 1 and self.activation == "Softmax":
            return softmax(logits)[:, self.relevant_class]
        return ACTIVATIONS.get(self.activation, ACTIVATIONS["Identity"])(logits[:, self.relevant_class])

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[dict]:
        """The passages sorted by relevance, best first: [{index, score, text}] (the top_k when given)."""
        passages = as_text_list(passages, "passages")
        scores = self.score(query, passages)
        order = np.argsort(-scores, kind="stable")[: top_k or len(passages)]
        return [{"index": int(i), "score": float(scores[i]), "text": passages[i]} for i in order]
