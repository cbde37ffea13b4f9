"""MaskedLM: fill in masked tokens with transformers' MLM heads."""
from __future__ import annotations

import numpy as np

from zoohub.errors import InputError
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.text_task import TextTask


class MaskedLM(TextTask):
    """Masked language model (`BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`).

    Example:
        >>> import zoohub
        >>> mlm = zoohub.MaskedLM.from_preset("path/to/bert")              # doctest: +SKIP
        >>> logits = mlm.predict(["Paris is the [MASK] of France."])       # [B, T, V]  # doctest: +SKIP
        >>> mlm.fill_mask("Paris is the [MASK] of France.", top_k=3)      # doctest: +SKIP
    """

    TASK = "masked_lm"

    def predict(self, x, pairs=None) -> np.ndarray:
        """Vocabulary logits [B, T, V] (T = longest input)."""
        out, inputs = self._run(x, pairs)
        return out[:, : inputs["input_ids"].shape[1]]

    def fill_mask(self, texts, top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
        """Per text, per mask token: the top_k (token, probability) pairs."""
        mask_id = self.tokenizer.token_id("mask_token") if self.tokenizer else None
        if mask_id is None:
            raise InputError("this tokenizer defines no mask_token")
        logits, inputs = self._run(texts)
        results = []
        for row, ids in zip(logits, inputs["input_ids"]):
            found = []
            for pos in np.flatnonzero(ids == mask_id):
                p = softmax(row[pos], dtype=np.float64)
                best = np.argsort(-p)[:top_k]
                found.append([(self.tokenizer.id_to_token(int(i)), float(p[i])) for i in best])
            results.append(found)
        return results
