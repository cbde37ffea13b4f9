"""Backbone: the bare model, hidden states out (texts for text families, images for vision ones)."""
from __future__ import annotations

import numpy as np

from zoohub.backend import using
from zoohub.tasks.base import Task
from zoohub.tasks.text_task import TextTask


class Backbone(TextTask):
    """The bare transformer of any supported family (saved as e.g. `BertModel`, `ViTModel`).

    Example:
        >>> import numpy as np, zoohub
        >>> backbone = zoohub.Backbone.from_preset("starter_bert_tiny_en")   # bundled toy BERT, 64 wide
        >>> backbone.predict(["great film", "i loved it"]).shape             # [B, T, D], T = longest input
        (2, 5, 64)
        >>> vit = zoohub.Backbone.from_preset("toy_vit")                 # images: [N, 1 + patches, D]
        >>> vit.predict([np.zeros((32, 32, 3), np.uint8)]).shape
        (1, 17, 32)
    """

    TASK = "backbone"

    def _configure(self, batch_size: int = 32, **options) -> None:
        if self.family.input_kind != "image":
            return super()._configure(batch_size=batch_size, **options)
        from zoohub.tasks.image_classifier import image_preprocessor

        Task._configure(self, **options)
        self.batch_size = batch_size
        self.preprocessor = image_preprocessor(self)

    def preprocessing_metadata(self) -> dict:
        if self.family.input_kind == "image":
            return {"image_size": [self.preprocessor.height, self.preprocessor.width]}
        return super().preprocessing_metadata()

    def predict(self, x, pairs=None) -> np.ndarray:
        """Last hidden states: [B, T, D] for strings or token dicts (T = longest input), or
        [N, 1 + patches, D] for images (arrays, PIL images, paths or {"pixel_values"})."""
        if self.family.input_kind == "image":
            from zoohub.tasks.image_classifier import pixel_inputs, run_image_batches

            with using(self.backend):
                return run_image_batches(self, pixel_inputs(self.preprocessor, x)["pixel_values"])
        out, inputs = self._run(x, pairs)
        return out[:, : inputs["input_ids"].shape[1]]
