"""Class labels shared by the classifier tasks: `id2label` from the checkpoint, or a new head."""
from __future__ import annotations

from typing import ClassVar

from zoohub.errors import InputError, UnsupportedConfigError


class LabelledHead:
    """Mixin for tasks whose head predicts one of N named classes (transformers' `id2label`)."""

    HEAD_SUFFIX: ClassVar[str] = "ForSequenceClassification"
    """The end of the transformers class names that carry such a head."""

    @classmethod
    def _has_head(cls, hf: dict) -> bool:
        return any(a.endswith(cls.HEAD_SUFFIX) for a in hf.get("architectures") or [])

    @classmethod
    def saved_labels(cls, hf: dict) -> dict | None:
        """config.json's id2label when the checkpoint has this task's head, else None."""
        if not cls._has_head(hf):
            return None
        return hf.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}  # transformers 5 omits its default 2

    @classmethod
    def _adjust_config(cls, hf: dict, *, num_labels=None, num_classes=None, labels=None, **options) -> dict:
        """Set id2label/label2id: the saved ones, or new ones for `num_classes` / `labels`."""
        hf = dict(hf)
        saved = cls.saved_labels(hf)
        n = num_classes or (len(labels) if labels else None) or (len(saved) if saved else None)
        if n is None:
            raise UnsupportedConfigError(
                f"this checkpoint has no classification head (no *{cls.HEAD_SUFFIX} architecture); pass "
                "num_classes=N (and optionally labels=[...]) to add a new one")
        if labels is not None and len(labels) != n:
            raise InputError(f"got {len(labels)} labels for num_classes={n}")
        if labels is None and saved and len(saved) == n:
            id2label = {str(k): v for k, v in saved.items()}
        else:
            id2label = {str(i): (labels[i] if labels else f"LABEL_{i}") for i in range(n)}
        hf["id2label"] = id2label
        hf["label2id"] = {v: int(k) for k, v in id2label.items()}
        return hf

    @classmethod
    def from_folder(cls, folder, *, num_classes=None, labels=None, **kw):
        return super().from_folder(folder, num_classes=num_classes, labels=labels, **kw)

    @classmethod
    def _num_labels(cls, hf: dict, num_labels):
        return len(hf["id2label"])

    @property
    def num_classes(self) -> int:
        return len(self.config.extra["id2label"])

    @property
    def labels(self) -> list[str]:
        """Class names in class order."""
        id2label = self.config.extra["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
