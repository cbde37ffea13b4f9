"""TextEmbedder: sentence embeddings with sentence-transformers' pooling and normalisation."""
from __future__ import annotations

import json

import numpy as np

from zoohub.hub.files import POOLING_CONFIG, pooling_config
from zoohub.layers import pool
from zoohub.tasks.text_task import TextTask

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last",
}


class TextEmbedder(TextTask):
    """Sentence embeddings: backbone, then the pooling of `1_Pooling/config.json` (mean when there is
    none), then L2 normalisation when `modules.json` has a Normalize module (or `normalize=True`).

    Example:
        >>> import zoohub
        >>> emb = zoohub.TextEmbedder.from_preset("starter_bert_tiny_en")  # bundled toy (real: all_minilm_l6_v2_en)
        >>> emb.pooling, emb.normalize                # no sentence-transformers files here: the defaults
        ('mean', True)
        >>> vectors = emb.predict(["great film", "awful film"])           # [B, D]
        >>> vectors.shape, (vectors ** 2).sum(-1).round(4).tolist()
        ((2, 64), [1.0, 1.0])
    """

    TASK = "backbone"  # saved as the bare model, with the sentence-transformers files beside it

    def _configure(self, pooling: str | None = None, normalize: bool | None = None,
                   sequence_length: int | None = None, **options) -> None:
        st_config = json.loads(self.aux_files.get("sentence_bert_config.json", b"{}"))
        super()._configure(sequence_length=sequence_length or st_config.get("max_seq_length"), **options)
        modules = json.loads(self.aux_files.get("modules.json", b"[]"))
        # The Pooling module's folder comes from modules.json (checked to stay inside the preset).
        pooling_file = pooling_config(modules, self.metadata.get("source", "this preset")) or POOLING_CONFIG
        settings = json.loads(self.aux_files.get(pooling_file, b"{}"))
        modes = [mode for key, mode in _POOLING_KEYS.items() if settings.get(key)]
        self.pooling = pooling or (modes[0] if modes else "mean")
        has_normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        self.normalize = normalize if normalize is not None else (has_normalize or not modules)

    def _outputs(self, params, inputs, rng=None):
        """Pooled embeddings [B, D]: sentence-transformers pools the bare backbone's hidden states."""
        return pool(super()._outputs(params, inputs, rng), inputs["attention_mask"], self.pooling)

    def predict(self, x, pairs=None) -> np.ndarray:
        """Embeddings [B, D] (float32), unit length when normalising."""
        out = self._run(x, pairs)[0].astype(np.float32)
        if self.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out
