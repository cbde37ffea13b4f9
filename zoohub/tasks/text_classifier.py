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
        >>> import tempfile, zoohub
        >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # bundled toy, head untrained
        >>> clf.labels
        ['negative', 'positive']
        >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en", num_classes=3,  # a new head
        ...                                         labels=["negative", "neutral", "positive"])
        >>> probs = clf.predict(["great film", "awful film"])              # [B, num_classes]
        >>> probs.shape, probs.sum(-1).round(4).tolist()
        ((2, 3), [1.0, 1.0])
        >>> folder = clf.save_to_preset(tempfile.mkdtemp() + "/clf")  # AutoModelForSequenceClassification loads it
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'zoohub.json']
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
