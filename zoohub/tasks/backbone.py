"""Backbone: the bare model, hidden states out."""
from __future__ import annotations

import numpy as np

from zoohub.tasks.text_task import TextTask


class Backbone(TextTask):
    """The bare transformer of any supported family (saved as e.g. `BertModel`).

    Example:
        >>> import zoohub
        >>> backbone = zoohub.Backbone.from_preset("path/to/bert")  # doctest: +SKIP
        >>> hidden = backbone.predict(["a sentence"])                # [B, T, D] numpy  # doctest: +SKIP
    """

    TASK = "backbone"

    def _outputs(self, params, inputs, rng=None):
        return self.family.forward(params, self.config, inputs, rng=rng)

    def predict(self, x, pairs=None, sequence_length_trim: bool = True) -> np.ndarray:
        """Last hidden states [B, T, D] for strings or a dict of token arrays (T = longest input)."""
        out, inputs = self._run(x, pairs)
        return out[:, : inputs["input_ids"].shape[1]] if sequence_length_trim else out
