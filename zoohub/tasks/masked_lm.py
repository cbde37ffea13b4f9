"""MaskedLM: fill in masked tokens with transformers' MLM heads."""
from __future__ import annotations

import numpy as np

from zoohub.errors import InputError
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.text_task import TextTask


class MaskedLM(TextTask):
    """Masked language model (`BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`).

    Example:
        The bundled `toy_bert_mlm` is a random toy, so its guesses mean nothing; real ones are e.g.
        "bert_base_en_uncased" (downloaded once).

        >>> import zoohub
        >>> mlm = zoohub.MaskedLM.from_preset("toy_bert_mlm")
        >>> mlm.predict(["the film was [MASK]."]).shape                     # [B, T, V]
        (1, 7, 498)
        >>> found = mlm.fill_mask(["the [MASK] was [MASK].", "great [MASK]"], top_k=3)  # per text, per mask
        >>> [[len(guesses) for guesses in text] for text in found], type(found[1][0][0])
        ([[3, 3], [3]], <class 'tuple'>)
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
