"""TextClassifier: sequence classification with transformers' heads (`...ForSequenceClassification`)."""
from __future__ import annotations

import numpy as np

from zoohub.errors import InputError, UnsupportedConfigError
from zoohub.tasks.text_task import TextTask


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class TextClassifier(TextTask):
    """Classify texts (or text pairs). Loads the checkpoint's head, or makes a new one.

    Args of `from_preset`: `num_classes` (needed when the checkpoint has no classifier, or to
    replace its head), `labels` (names, in class order), `sequence_length`, `batch_size`, `dtype`.

    Example:
        >>> import zoohub
        >>> clf = zoohub.TextClassifier.from_preset("path/to/bert", num_classes=3)  # doctest: +SKIP
        >>> probs = clf.predict(["great film", "awful film"])                        # [2, 3]  # doctest: +SKIP
        >>> clf.save_to_preset("out/")  # AutoModelForSequenceClassification loads it  # doctest: +SKIP
    """

    TASK = "text_classifier"

    @classmethod
    def _adjust_config(cls, hf: dict, *, num_labels=None, num_classes=None, labels=None, **options) -> dict:
        hf = dict(hf)
        saved = hf.get("id2label") if cls._has_head(hf) else None
        if cls._has_head(hf) and not saved:
            # transformers 5 leaves id2label out for its default num_labels=2
            saved = {"0": "LABEL_0", "1": "LABEL_1"}
        n = num_classes or (len(labels) if labels else None) or (len(saved) if saved else None)
        if n is None:
            raise UnsupportedConfigError(
                "this checkpoint has no sequence-classification head; pass num_classes=N "
                "(and optionally labels=[...]) to add a new one")
        if labels is not None and len(labels) != n:
            raise InputError(f"got {len(labels)} labels for num_classes={n}")
        if labels is None and saved and len(saved) == n:
            id2label = {str(k): v for k, v in saved.items()}
        else:
            id2label = {str(i): (labels[i] if labels else f"LABEL_{i}") for i in range(n)}
        hf["id2label"] = id2label
        hf["label2id"] = {v: int(k) for k, v in id2label.items()}
        return hf

    @staticmethod
    def _has_head(hf: dict) -> bool:
        return any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or [])

    @classmethod
    def from_folder(cls, folder, *, num_classes=None, labels=None, **kw):
        return super().from_folder(folder, num_classes=num_classes, labels=labels, **kw)

    @classmethod
    def _num_labels(cls, hf: dict, num_labels):
        return len(hf["id2label"])

    def _configure(self, num_classes=None, labels=None, **options) -> None:
        super()._configure(**options)

    @property
    def num_classes(self) -> int:
        return len(self.config.extra["id2label"])

    @property
    def labels(self) -> list[str]:
        id2label = self.config.extra["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]

    def _outputs(self, params, inputs, rng=None):
        hidden = self.family.forward(params[self.family.prefix], self.config, inputs, rng=rng)
        return self.head.apply(params, self.config, hidden, inputs, rng=rng)

    def logits(self, x, pairs=None) -> np.ndarray:
        """Raw logits [B, num_classes]."""
        return self._run(x, pairs)[0]

    def predict(self, x, pairs=None) -> np.ndarray:
        """Class probabilities [B, num_classes] for texts, text pairs, or token-id dicts."""
        return _softmax(self.logits(x, pairs).astype(np.float32))

    def classify(self, x, pairs=None) -> list[str]:
        """The most likely label name per input."""
        return [self.labels[i] for i in self.predict(x, pairs).argmax(-1)]
