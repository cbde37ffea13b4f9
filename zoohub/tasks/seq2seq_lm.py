"""Seq2SeqLM: encoder-decoder language models (T5, Flan-T5, mT5, and the other families with a
"seq2seq_lm" head) with generation, scoring, translation and summarization.

Generation is CausalLM's: the same settings, samplers, beam search, stop handling, streaming and, on
jax, the same compiled loop; for an encoder-decoder that loop encodes the inputs once, computes the
cross-attention keys/values once and decodes from the checkpoint's `decoder_start_token_id`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from zoohub.backend import ops
from zoohub.errors import InputError, MissingFileError
from zoohub.tasks.base import on_own_backend
from zoohub.tasks.causal_lm import CausalLM
from zoohub.tasks.generation import GenerationSettings, cut_at_stop
from zoohub.tasks.probabilities import log_softmax
from zoohub.tasks.text_task import as_text_list
from zoohub.tasks.tokenizer import pad_batch

# T5's task_specific_params name languages by code: translation_en_to_de -> "translate English to German: "
LANGUAGE_CODES = {"english": "en", "german": "de", "french": "fr", "romanian": "ro"}


class Seq2SeqLM(CausalLM):
    """An encoder-decoder model with transformers' `...ForConditionalGeneration` / `MarianMTModel` weights.

    Example:
        A random tiny T5 made on the spot (real ones: "flan_t5_small", downloaded once):

        >>> import tempfile, zoohub
        >>> from zoohub.backbones import get_family
        >>> from zoohub.backbones.layout import init_params
        >>> from zoohub.backend import using
        >>> family = get_family("t5")
        >>> config = family.config_class.from_hf({"vocab_size": 40, "d_model": 16, "d_kv": 4, "d_ff": 24,
        ...     "num_layers": 1, "num_heads": 2, "decoder_start_token_id": 0})
        >>> with using("numpy"):
        ...     model = Seq2SeqLM(family=family, config=config, params=init_params(
        ...         family, config, head=family.heads["seq2seq_lm"], seed=0))
        ...     model._configure()  # from_preset does this; here: no files, so the config's token ids
        ...     tokens = model.generate_tokens({"input_ids": [[5, 6, 7, 1]]}, max_new_tokens=4, stop_token_ids=[])
        >>> [len(row) for row in tokens]
        [4]
        >>> model.logits({"input_ids": [[5, 6, 1]]}, {"input_ids": [[8, 9]]}).shape
        (1, 2, 40)
    """

    TASK = "seq2seq_lm"

    def _configure(self, **options) -> None:
        super()._configure(**options)
        start = self._ids_setting("decoder_start_token_id")
        pad = self._ids_setting("pad_token_id")
        self.decoder_start_token_id: int = (start or pad or [0])[0]
        """The decoder's first token (generation_config.json, else config.json; T5 uses its pad id)."""

    # ---- inputs --------------------------------------------------------------------------------
    def _inputs(self, x, *, left: bool = False) -> dict[str, np.ndarray]:
        # Encoder inputs are right-padded: families with absolute positions count them from column 0.
        if isinstance(x, Mapping):
            return super()._inputs(x)
        if self.preprocessor is None:
            raise MissingFileError("this preset has no tokenizer files; pass token ids as a dict instead of strings")
        return self.preprocessor(x, left=False)

    def _targets(self, targets, n: int) -> dict[str, np.ndarray]:
        """Target token ids (with the tokenizer's EOS) right-padded; labels -100 on padding."""
        if isinstance(targets, Mapping):
            ids = np.atleast_2d(np.asarray(targets["input_ids"])).astype(np.int32)
            mask = np.atleast_2d(np.asarray(targets.get("attention_mask", np.ones_like(ids)))).astype(np.int32)
        else:
            seqs, _ = self.tokenizer.encode_batch(as_text_list(targets, "targets"), max_length=None)
            ids, mask = pad_batch(seqs, length=max(map(len, seqs)), pad_id=self.tokenizer.pad_token_id)
        if len(ids) != n:
            raise InputError(f"got {n} sources but {len(ids)} targets")
        return {"labels": np.where(mask != 0, ids, -100).astype(np.int32), "decoder_attention_mask": mask}

    def _teacher_forced(self, sources, targets) -> dict[str, np.ndarray]:
        inputs = self._inputs(sources)
        target = self._targets(targets, len(inputs["input_ids"]))
        labels = target["labels"]
        decoder = np.concatenate([np.full((len(labels), 1), self.decoder_start_token_id, np.int32), labels[:, :-1]], 1)
        decoder = np.where(decoder == -100, self._pad_id([]), decoder).astype(np.int32)  # transformers' shift_right
        return {**inputs, "decoder_input_ids": decoder, "decoder_attention_mask": target["decoder_attention_mask"],
                "labels": target["labels"]}

    @on_own_backend
    def logits(self, sources, targets=None) -> np.ndarray:
        """Teacher-forced logits [B, T, V] of `targets` given `sources` (texts or token dicts); targets
        are fed after the decoder start token, so position t predicts target token t."""
        if "outputs" not in self._compiled:
            self._compiled["outputs"] = ops().jit(lambda params, inputs: self._outputs(params, inputs))
        if targets is None and isinstance(sources, Mapping) and "decoder_input_ids" in sources:
            batch = {k: np.atleast_2d(np.asarray(v)).astype(np.int32) for k, v in sources.items()}
            batch.setdefault("attention_mask", np.ones_like(batch["input_ids"]))
        elif targets is None:
            raise InputError("Seq2SeqLM.logits needs sources and targets (the decoder is teacher-forced), or one "
                             "token dict with input_ids and decoder_input_ids")
        else:
            batch = self._teacher_forced(sources, targets)
            batch.pop("labels")
        return ops().to_numpy(self._compiled["outputs"](self.params, batch))

    @on_own_backend
    def score(self, sources, targets=None) -> list[np.ndarray]:
        """Per pair, log p of each target token (its EOS included) given the source and the tokens before it."""
        if targets is None:
            raise InputError("Seq2SeqLM.score needs sources and targets")
        labels = self._teacher_forced(sources, targets)["labels"]
        logp = log_softmax(self.logits(sources, targets), dtype=np.float64)
        picked = np.take_along_axis(logp, np.maximum(labels, 0)[..., None].astype(np.int64), -1)[..., 0]
        return [picked[i, labels[i] != -100].astype(np.float32) for i in range(len(labels))]

    # ---- generation ----------------------------------------------------------------------------
    def settings(self, **kwargs) -> GenerationSettings:
        """CausalLM's settings plus the checkpoint's forced first / last tokens (BART, Marian, mBART)."""
        for key in ("forced_bos_token_id", "forced_eos_token_id"):
            if key not in kwargs:
                found = self._ids_setting(key)
                kwargs[key] = found[0] if found else -1
        return super().settings(**kwargs)

    def _check_length(self, inputs, s: GenerationSettings) -> None:
        limit = self.family.max_length(self.config)
        if limit and (1 + s.max_new_tokens > limit or inputs["input_ids"].shape[1] > limit):
            raise InputError(f"input or 1 + max_new_tokens is past the model's {limit} positions")

    def _generate_tokens(self, inputs, s: GenerationSettings) -> list[list[int]]:
        n = s.num_return_sequences
        if n > 1 and s.sampler != "beam":  # n samples per input: the inputs repeated
            inputs = {k: np.repeat(v, n, 0) for k, v in inputs.items()}
            s = GenerationSettings(**{**s.__dict__, "num_return_sequences": 1})
        return super()._generate_tokens(inputs, s)

    @on_own_backend
    def generate(self, texts, *, max_new_tokens: int = 64, stream: bool = False, **kwargs):
        """Output text for each input: a string for a string, a list for a list, or with `stream=True`
        (one input) an iterator of text pieces. Arguments as in `CausalLM.generate`, plus
        `num_return_sequences=n` (a list of n texts per input, input by input)."""
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer; use generate_tokens with token ids")
        inputs, s = self._inputs(texts), self.settings(max_new_tokens=max_new_tokens, **kwargs)
        if stream:
            return self._stream(inputs, s)
        out = [cut_at_stop(self._decode(r), s.stop)[0] for r in self._generate_tokens(inputs, s)]
        return out[0] if isinstance(texts, str) and s.num_return_sequences == 1 else out

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- conveniences --------------------------------------------------------------------------
    def _task_params(self) -> dict:
        return self.config.extra.get("task_specific_params") or {}

    def translate(self, texts, *, source_lang: str | None = None, target_lang: str | None = None, **kwargs):
        """Translate with the checkpoint's own convention: T5's task prefix (`task_specific_params`
        "translation_en_to_de" -> "translate English to German: "), a target-language token the tokenizer
        has (mBART/NLLB-style `de_DE`, forced as the first new token; Marian multilingual `>>de<<`,
        prepended), or nothing (a one-pair translator such as Marian opus-mt)."""
        items = [texts] if isinstance(texts, str) else as_text_list(texts)
        prefix, table = "", self._task_params()
        if source_lang or target_lang:
            src = LANGUAGE_CODES.get((source_lang or "").lower(), source_lang)
            tgt = LANGUAGE_CODES.get((target_lang or "").lower(), target_lang)
            key = f"translation_{src}_to_{tgt}"
            token = self.tokenizer.backend.token_to_id(target_lang) if target_lang and self.tokenizer else None
            marker = self.tokenizer.backend.token_to_id(f">>{tgt}<<") if tgt and self.tokenizer else None
            if key in table:
                prefix = table[key].get("prefix", "")
            elif token is not None:
                kwargs.setdefault("forced_bos_token_id", token)
            elif marker is not None:
                prefix = f">>{tgt}<< "
            else:
                known = sorted(k for k in table if k.startswith("translation_"))
                raise InputError(f"this checkpoint has no way to translate {source_lang} -> {target_lang}: no "
                                 f"task_specific_params[{key!r}] (it has: {known or 'none'}) and no language token "
                                 f"{target_lang!r} or '>>{tgt}<<' in its tokenizer")
        out = self.generate([prefix + t for t in items], **kwargs)
        return out[0] if isinstance(texts, str) else out

    def summarize(self, texts, **kwargs):
        """Summarize with the checkpoint's `task_specific_params["summarization"]` prefix (T5's
        "summarize: "), or the plain text for a summarization checkpoint (BART-CNN)."""
        prefix = (self._task_params().get("summarization") or {}).get("prefix", "")
        items = [texts] if isinstance(texts, str) else as_text_list(texts)
        out = self.generate([prefix + t for t in items], **kwargs)
        return out[0] if isinstance(texts, str) else out
