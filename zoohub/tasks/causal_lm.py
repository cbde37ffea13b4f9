"""CausalLM: decoder language models (GPT-2, Llama/SmolLM, Mistral, Qwen2/3, Gemma 1/2/3) with
logits, scoring, generation (greedy, sampling, beam search, stop tokens and strings, streaming)
and chat templates."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from zoohub.backend import ops
from zoohub.errors import InputError, MissingFileError
from zoohub.tasks.base import Task, on_own_backend
from zoohub.tasks.chat import find_chat_template, render_chat
from zoohub.tasks.generation import GenerationSettings, cut_at_stop, decode_numpy, stream_text, trim_row
from zoohub.tasks.probabilities import log_softmax
from zoohub.tasks.text_task import as_text_list
from zoohub.tasks.tokenizer import Tokenizer, pad_batch

log = logging.getLogger("zoohub")


class CausalLMPreprocessor:
    """Strings -> left-padded `input_ids` / `attention_mask`, adding BOS/EOS as the checkpoint says.

    The tokenizer's own post-processor (tokenizer.json) adds what it adds; `add_bos_token` /
    `add_eos_token` in tokenizer_config.json add the rest (never twice).

    Example:
        >>> from zoohub.presets.resolve import resolve_preset
        >>> pre = CausalLMPreprocessor(Tokenizer.from_folder(resolve_preset("toy_llama")))  # bundled toy
        >>> batch = pre(["the film", "great"])             # "<s>" from the tokenizer, padded on the left
        >>> batch["input_ids"].shape, batch["attention_mask"].tolist()
        ((2, 5), [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
        >>> pre.tokenizer.decode(batch["input_ids"][1], skip_special_tokens=False)
        '<pad><pad><s>great'
    """

    def __init__(self, tokenizer: Tokenizer, *, add_bos: bool | None = None, add_eos: bool = False):
        self.tokenizer = tokenizer
        self.add_bos = bool(tokenizer.config.get("add_bos_token", False)) if add_bos is None else add_bos
        self.add_eos = add_eos

    def encode(self, texts: Sequence[str], *, add_special_tokens: bool = True, add_eos: bool | None = None) -> list[list[int]]:
        ids, _ = self.tokenizer.encode_batch(texts, max_length=None, add_special_tokens=add_special_tokens)
        bos, eos = self.tokenizer.token_id("bos_token"), self.tokenizer.token_id("eos_token")
        out = []
        for seq in ids:
            seq = list(seq)
            if add_special_tokens and self.add_bos and bos is not None and (not seq or seq[0] != bos):
                seq = [bos] + seq
            if (self.add_eos if add_eos is None else add_eos) and eos is not None and (not seq or seq[-1] != eos):
                seq = seq + [eos]
            out.append(seq)
        return out

    def __call__(self, texts, *, left: bool = True, add_special_tokens: bool = True) -> dict[str, np.ndarray]:
        seqs = self.encode(as_text_list(texts, "prompts"), add_special_tokens=add_special_tokens)
        if any(not s for s in seqs):
            raise InputError("a prompt encodes to no tokens; pass non-empty text")
        ids, mask = pad_batch(seqs, length=max(map(len, seqs)), pad_id=self.tokenizer.pad_token_id, left=left)
        return {"input_ids": ids, "attention_mask": mask}


class CausalLM(Task):
    """A decoder language model with transformers' `...ForCausalLM` / `GPT2LMHeadModel` weights.

    Example:
        The bundled `toy_llama` is a random toy (its text is noise); real ones are e.g.
        "smollm2_135m_instruct" (downloaded once). The numpy backend needs no compiling: quickest here.

        >>> import tempfile, zoohub
        >>> from zoohub.backend import using
        >>> with using("numpy"):
        ...     lm = zoohub.CausalLM.from_preset("toy_llama")
        >>> lm
        CausalLM(llama, 30,880 params, backend=numpy)
        >>> lm.generate("the film was", max_new_tokens=8)                       # greedy
        ' was was was was was was was was'
        >>> texts = lm.generate(["a", "bb"], sampler="top_p", top_p=0.9, temperature=0.7, seed=0, stop=["\\n\\n"],
        ...                     max_new_tokens=5)
        >>> len(texts)
        2
        >>> for piece in lm.generate("Tell me", stream=True, max_new_tokens=4): print(piece, end="")
        eeee
        >>> lm.chat([{"role": "user", "content": "Hi!"}], max_new_tokens=4)   # with the preset's chat template
        '>>>>'
        >>> [logp.shape for logp in lm.score(["some text", "a"])]            # log p of each token after the first
        [(7,), (1,)]
        >>> folder = lm.save_to_preset(tempfile.mkdtemp() + "/lm")   # transformers.AutoModelForCausalLM loads it
        >>> (folder / "model.safetensors").is_file()
        True
    """

    TASK = "causal_lm"

    def _configure(self, **options) -> None:
        super()._configure(**options)
        raw = self.aux_files.get("generation_config.json")
        self.generation_config: dict = json.loads(raw) if raw else {}
        self.preprocessor = CausalLMPreprocessor(self.tokenizer) if self.tokenizer else None

    def _inputs(self, x, *, left: bool = True) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            out = {k: np.asarray(v) for k, v in x.items()}
            if "input_ids" not in out:
                raise InputError("token inputs need an 'input_ids' array")
            out["input_ids"] = np.atleast_2d(out["input_ids"]).astype(np.int32)
            out.setdefault("attention_mask", np.ones_like(out["input_ids"]))
            out["attention_mask"] = np.atleast_2d(out["attention_mask"]).astype(np.int32)
            return out
        if self.preprocessor is None:
            raise MissingFileError("this preset has no tokenizer files; pass token ids as a dict instead of strings")
        return self.preprocessor(x, left=left)

    @on_own_backend
    def logits(self, x) -> np.ndarray:
        """Logits [B, T, V] for texts (left-padded) or a token dict."""
        if "outputs" not in self._compiled:
            self._compiled["outputs"] = ops().jit(lambda params, inputs: self._outputs(params, inputs))
        inputs = self._inputs(x)
        return ops().to_numpy(self._compiled["outputs"](self.params, inputs))

    @on_own_backend
    def score(self, x) -> list[np.ndarray]:
        """Per text, the log-probability of each token given those before it ([n - 1] for n tokens)."""
        inputs = self._inputs(x, left=False)
        logp = log_softmax(self.logits(inputs), dtype=np.float64)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        picked = np.take_along_axis(logp[:, :-1], ids[:, 1:, None].astype(np.int64), -1)[..., 0]
        return [picked[i, : int(mask[i].sum()) - 1].astype(np.float32) for i in range(len(ids))]

    # ---- generation ----------------------------------------------------------------------------
    def _ids_setting(self, key: str) -> list[int]:
        value = self.generation_config.get(key, self.config.extra.get(key))
        return [] if value is None else ([int(value)] if isinstance(value, int) else [int(v) for v in value])

    def default_stop_token_ids(self) -> list[int]:
        """generation_config.json's eos_token_id, else the tokenizer's EOS, else config.json's."""
        found = list(self.generation_config.get("eos_token_id") or []) if isinstance(
            self.generation_config.get("eos_token_id"), list) else self._ids_setting("eos_token_id")
        if not found and self.tokenizer and self.tokenizer.token_id("eos_token") is not None:
            found = [self.tokenizer.token_id("eos_token")]
        return found

    def _pad_id(self, stop_ids: Sequence[int]) -> int:
        if self.tokenizer and self.tokenizer.token_id("pad_token") is not None:
            return self.tokenizer.token_id("pad_token")
        pad = self._ids_setting("pad_token_id")
        return pad[0] if pad else (stop_ids[0] if stop_ids else 0)

    def settings(self, *, max_new_tokens: int = 64, sampler: str | None = None, stop: Sequence[str] | str | None = None,
                 stop_token_ids: Sequence[int] | None = None, num_beams: int = 1, **kw) -> GenerationSettings:
        """GenerationSettings from `generate`'s keyword arguments and the checkpoint's defaults."""
        if sampler is None:
            sampler = "beam" if num_beams > 1 else "top_p" if "top_p" in kw else "top_k" if "top_k" in kw else (
                "temperature" if "temperature" in kw else "greedy")
        stop_ids = tuple(self.default_stop_token_ids() if stop_token_ids is None else stop_token_ids)
        stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return GenerationSettings(max_new_tokens=max_new_tokens, sampler=sampler, stop=stop, stop_token_ids=stop_ids,
                                  num_beams=num_beams, pad_token_id=self._pad_id(stop_ids), **kw)

    def _check_length(self, inputs, s: GenerationSettings) -> None:
        longest = int(inputs["attention_mask"].sum(1).max()) + s.max_new_tokens
        limit = self.family.max_length(self.config)
        if limit and longest > limit:
            msg = f"prompt + max_new_tokens = {longest} tokens is past the model's {limit} positions"
            if self.family.learned_positions:  # a learned position table has no rows past the limit
                raise InputError(msg + "; shorten the prompt or lower max_new_tokens")
            log.warning(msg)

    def _steps(self, inputs, s: GenerationSettings, chunk: int | None) -> Iterator[np.ndarray]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if self.backend == "jax":
            from zoohub.tasks.generation_jax import decode_jax

            yield from decode_jax(self, self.params, ids, mask, s, chunk=chunk)
        else:
            for tok in decode_numpy(self, self.params, ids, mask, s):
                yield tok[:, None]

    @on_own_backend
    def generate_tokens(self, x, **kwargs) -> list[list[int]]:
        """New token ids per prompt (up to and including a stop token) for texts or a token dict
        (`input_ids`, `attention_mask`, left-padded). Keyword arguments as in `generate`."""
        return self._generate_tokens(self._inputs(x), self.settings(**kwargs))

    def _generate_tokens(self, inputs, s: GenerationSettings) -> list[list[int]]:
        self._check_length(inputs, s)
        if s.sampler == "beam":
            from zoohub.tasks.generation_beam import beam_search

            return beam_search(self, self.params, inputs["input_ids"], inputs["attention_mask"], s,
                               s.num_return_sequences)
        rows: list[list[int]] = [[] for _ in range(inputs["input_ids"].shape[0])]
        chunk = 16 if s.stop else None
        for new in self._steps(inputs, s, chunk):
            for row, toks in zip(rows, new):
                row.extend(int(t) for t in toks)
            if s.stop and all(cut_at_stop(self._decode(r), s.stop)[1] or set(r) & set(s.stop_token_ids) for r in rows):
                break
        return [trim_row(r, s.stop_token_ids) for r in rows]

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @on_own_backend
    def generate(self, prompts, *, max_new_tokens: int = 64, stream: bool = False, **kwargs):
        """Continue each prompt; returns a string for a string, a list for a list, or, with
        `stream=True` (one prompt), an iterator of text pieces as they are produced.

        Args:
            prompts: a string, a list of strings, or a token dict.
            max_new_tokens: how many tokens to add at most.
            sampler: "greedy" (default), "temperature", "top_k", "top_p" or "beam" (inferred from the
                other arguments when left out).
            temperature, top_k, top_p, num_beams, length_penalty, early_stopping, seed: sampler settings.
            stop: strings that end the text (the text is cut before them).
            stop_token_ids: token ids that end a row (default: the checkpoint's EOS).
        """
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer; use generate_tokens with token ids")
        inputs, s = self._inputs(prompts), self.settings(max_new_tokens=max_new_tokens, **kwargs)
        if stream:
            return self._stream(inputs, s)
        texts = [cut_at_stop(self._decode(r), s.stop)[0] for r in self._generate_tokens(inputs, s)]
        return texts[0] if isinstance(prompts, str) else texts

    def _stream(self, inputs, s: GenerationSettings) -> Iterator[str]:
        if inputs["input_ids"].shape[0] != 1:
            raise InputError("stream=True takes one prompt; loop over prompts to stream several")
        if s.sampler == "beam":
            raise InputError("beam search cannot stream: the best beam is known only at the end")
        self._check_length(inputs, s)
        tokens = ([int(t) for t in new[0]] for new in self._steps(inputs, s, chunk=1))
        return stream_text(tokens, self._decode, s.stop, s.stop_token_ids)

    # ---- chat ----------------------------------------------------------------------------------
    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True, chat_template: str | None = None,
                            **template_kwargs) -> str:
        """The prompt text the checkpoint's chat template makes of `messages`."""
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer, so no chat template")
        template = chat_template or find_chat_template(self.tokenizer.config, self.aux_files)
        specials = {name: self.tokenizer.token(name) for name in
                    ("bos_token", "eos_token", "unk_token", "pad_token") if self.tokenizer.token(name) is not None}
        return render_chat(template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=specials, **template_kwargs)

    @on_own_backend
    def chat(self, messages, *, max_new_tokens: int = 256, stream: bool = False, chat_template: str | None = None,
             template_kwargs: Mapping | None = None, **kwargs):
        """The assistant's reply to `messages` ([{"role": "user", "content": "Hi!"}, ...])."""
        text = self.apply_chat_template(messages, chat_template=chat_template, **(template_kwargs or {}))
        # The template writes its own special tokens (BOS included), as transformers tokenizes it.
        ids = self.preprocessor.encode([text], add_special_tokens=False)
        inputs = {"input_ids": np.asarray(ids, np.int32), "attention_mask": np.ones((1, len(ids[0])), np.int32)}
        s = self.settings(max_new_tokens=max_new_tokens, **kwargs)
        if stream:
            return self._stream(inputs, s)
        return cut_at_stop(self._decode(self._generate_tokens(inputs, s)[0]), s.stop)[0]
