"""TextClassifier: sequence classification with transformers' heads (`...ForSequenceClassification`)."""
from __future__ import annotations

import numpy as np

from zoohub.tasks.labels import LabelledHead
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.text_task import TextTask


class TextClassifier(LabelledHead, TextTask):
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
    HEAD_SUFFIX = "ForSequenceClassification"

    def _configure(self, num_classes=None, labels=None, **options) -> None:
        super()._configure(**options)

    def logits(self, x, pairs=None) -> np.ndarray:
        """Raw logits [B, num_classes]."""
        return self._run(x, pairs)[0]

    def predict(self, x, pairs=None) -> np.ndarray:
        """Class probabilities [B, num_classes] for texts, text pairs, or token-id dicts."""
        return softmax(self.logits(x, pairs))

    def classify(self, x, pairs=None) -> list[str]:
        """The most likely label name per input."""
        return [self.labels[i] for i in self.predict(x, pairs).argmax(-1)]
