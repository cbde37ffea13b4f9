"""Shared plumbing of the encoder text tasks: strings -> padded, bucketed batches -> compiled forward."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from zoohub.backend import ops, using
from zoohub.errors import InputError, MissingFileError
from zoohub.tasks.base import Task
from zoohub.tasks.tokenizer import bucket_length, pad_batch

log = logging.getLogger("zoohub")


def as_text_list(texts, what: str = "texts") -> list[str]:
    """A list of strings from a string or a sequence of strings, with a clear error otherwise."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise InputError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise InputError(f"{what} is empty; pass at least one string")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is {type(t).__name__}, not str")
    return out


class TextTask(Task):
    """A task whose inputs are texts (or token-id dicts) and whose model is an encoder."""

    def _configure(self, sequence_length: int | None = None, batch_size: int = 32, **options) -> None:
        super()._configure(**options)
        limit = self.family.max_length(self.config)
        saved = (self.metadata.get("preprocessing") or {}).get("sequence_length")
        tok_limit = self.tokenizer.model_max_length if self.tokenizer else None
        if sequence_length and limit and sequence_length > limit:
            log.warning("sequence_length %d is past the position table; using %d", sequence_length, limit)
            sequence_length = limit
        candidates = [x for x in (sequence_length or saved, limit, tok_limit, 512) if x]
        self.sequence_length = int(min(candidates)) if not sequence_length else int(sequence_length)
        self.batch_size = batch_size

    def preprocessing_metadata(self) -> dict:
        return {"sequence_length": self.sequence_length}

    def preprocess(self, texts, pairs=None) -> dict[str, np.ndarray]:
        """Tokenize, truncate to `sequence_length`, right-pad to the longest: numpy int32 arrays."""
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer files; pass token ids as a dict instead of strings")
        texts = as_text_list(texts)
        if pairs is not None:
            pairs = as_text_list(pairs, "pairs")
            if len(pairs) != len(texts):
                raise InputError(f"got {len(texts)} texts but {len(pairs)} pairs")
        ids, types = self.tokenizer.encode_batch(texts, pairs, max_length=self.sequence_length)
        length = max(len(s) for s in ids)
        input_ids, mask = pad_batch(ids, length=length, pad_id=self.tokenizer.pad_token_id)
        out = {"input_ids": input_ids, "attention_mask": mask}
        if self.family.token_types:
            out["token_type_ids"], _ = pad_batch(types, length=length, pad_id=0)
        return out

    def _inputs(self, x, pairs=None) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            out = {k: np.asarray(v) for k, v in x.items()}
            if "input_ids" not in out:
                raise InputError("token inputs need an 'input_ids' array")
            out.setdefault("attention_mask", np.ones_like(out["input_ids"]))
            return out
        return self.preprocess(x, pairs)

    def _compiled_outputs(self):
        if "outputs" not in self._compiled:
            self._compiled["outputs"] = ops().jit(lambda params, inputs: self._outputs(params, inputs))
        return self._compiled["outputs"]

    def _run(self, x, pairs=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Outputs for all inputs, in batches padded to bucket shapes so jax compiles a few shapes only."""
        with using(self.backend):
            return self._run_batches(self._inputs(x, pairs))

    def _run_batches(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n, length = inputs["input_ids"].shape
        fn = self._compiled_outputs()
        bucketed = self.backend == "jax"
        padded_len = bucket_length(length, maximum=max(length, self.sequence_length)) if bucketed else length
        chunks = []
        for start in range(0, n, self.batch_size):
            batch = {k: v[start:start + self.batch_size] for k, v in inputs.items()}
            b = batch["input_ids"].shape[0]
            padded_b = bucket_length(b, minimum=1, maximum=self.batch_size) if bucketed else b
            batch = {k: np.pad(v, ((0, padded_b - b), (0, padded_len - length)),
                               constant_values=self.tokenizer.pad_token_id if (k == "input_ids" and self.tokenizer) else 0)
                     for k, v in batch.items()}
            if self.mesh is not None:
                from zoohub.backend.sharding import shard_batch

                batch = shard_batch(batch, self.mesh)
            out = ops().to_numpy(fn(self.params, batch))
            chunks.append(out[:b])
        return np.concatenate(chunks), inputs
