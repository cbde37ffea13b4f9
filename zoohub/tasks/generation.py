"""Decoding: settings, samplers, the model step over a static KV cache, and the numpy decode loop.

The algorithm is the same on both backends: prefill the (left-padded) prompts into a KV cache of
static length `prompt + max_new_tokens`, then one token per step. Positions are counted over real
tokens, so padding never shifts them; the attention mask over cache slots is `slot written and
slot was a real token`. On jax the whole loop is one compiled `lax.while_loop`
(`generation_jax.py`, imported only on that backend); here it is a Python loop.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from zoohub.backbones.decoder import KVCache, default_positions
from zoohub.backend import ops
from zoohub.errors import InputError
from zoohub.layers import get_path
from zoohub.layers.kv_cache import init_cache

SAMPLERS = ("greedy", "temperature", "top_k", "top_p", "beam")


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    """How to pick tokens; `sampler` names the method, the other fields tune it."""

    max_new_tokens: int = 64
    sampler: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0          # 0: no top-k filter
    top_p: float = 1.0      # 1.0: no nucleus filter
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    pad_token_id: int = 0
    num_return_sequences: int = 1  # beams kept per prompt (beam search)
    forced_bos_token_id: int = -1  # the first new token, when >= 0 (mBART-style target languages)
    forced_eos_token_id: int = -1  # the last allowed new token, when >= 0 (BART, Marian)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler {self.sampler!r} is not one of {SAMPLERS}")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0 and self.do_sample:
            raise InputError("temperature must be > 0 for sampling; use sampler='greedy' for argmax decoding")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0, got {self.top_k}")
        if self.sampler == "beam" and self.num_beams < 2:
            raise InputError("sampler='beam' needs num_beams >= 2")

    @property
    def do_sample(self) -> bool:
        return self.sampler in ("temperature", "top_k", "top_p")


# ---- sampling (backend-generic: xp is numpy or jax.numpy) --------------------------------------

def filter_logits(logits, temperature, top_k, top_p, xp=None):
    """Temperature, then top-k, then top-p (nucleus), in transformers' order; filtered logits are -inf.

    top_k / top_p may be traced values on jax, so both filters always run (k = 0 means V).
    xp: the array module (default: the backend's; the serving engine samples on the host with numpy)."""
    xp = xp or ops().xp
    logits = logits.astype(xp.float32) / temperature
    vocab = logits.shape[-1]
    ordered = -xp.sort(-logits, axis=-1)                                       # [B, V] descending
    k = xp.where(top_k > 0, top_k, vocab)
    rank = xp.arange(vocab)[None, :]
    ordered = xp.where(rank < k, ordered, -xp.inf)
    probs = xp.exp(ordered - ordered[:, :1])
    probs = probs / probs.sum(-1, keepdims=True)
    mass_before = xp.cumsum(probs, axis=-1) - probs                            # probability of better tokens
    keep = (mass_before < top_p) & (rank < k)
    keep = keep | (rank == 0)
    num_keep = keep.sum(-1, keepdims=True)
    threshold = xp.take_along_axis(ordered, num_keep - 1, axis=-1)             # smallest kept logit
    return xp.where(logits < threshold, -xp.inf, logits)


def pick_tokens(logits, noise, *, do_sample: bool, temperature=1.0, top_k=0, top_p=1.0, xp=None):
    """argmax for greedy; for sampling, argmax(filtered logits + Gumbel noise) (exact categorical sampling)."""
    xp = xp or ops().xp
    if not do_sample:
        return xp.argmax(logits, axis=-1).astype(xp.int32)
    return xp.argmax(filter_logits(logits, temperature, top_k, top_p, xp) + noise, axis=-1).astype(xp.int32)


def force_tokens(logits, step, *, bos, eos, last_step, xp=None):
    """transformers' ForcedBOS / ForcedEOS logits processors: at new-token `step` 0 only `bos` may come,
    at `last_step` only `eos` (its score set to 0, the others to -inf); a negative id forces nothing.
    Works on logits or log-probabilities [B, V]; step, bos, eos, last_step may be traced."""
    xp = xp or ops().xp
    vocab = xp.arange(logits.shape[-1])[None, :]
    for token, when in ((bos, step == 0), (eos, step == last_step)):
        forced = xp.where(vocab == token, 0.0, -xp.inf).astype(logits.dtype)
        logits = xp.where(when & (token >= 0), forced, logits)
    return logits


# ---- one model step over the cache -------------------------------------------------------------

def model_step(task, params, *, tokens, positions, cache: KVCache, last=None, cross=None):
    """Run `tokens` [B, T] at `positions` [B, T] through the model, writing their keys and values at
    `cache.index`; returns (float32 logits of the last position [B, V], the updated cache).

    last: [B] the index in T of the position whose logits to return, where rows end in padding
    (the serving engine's right-padded prompt chunks); default the final one.
    cross: an encoder-decoder's cross-attention keys/values (`Family.cross_cache`); the tokens are then
    decoder tokens."""
    family = task.family
    inputs = {"input_ids": tokens, "position_ids": positions}
    backbone = family.backbone_params(params)
    if cross is None:
        hidden, cache = family.forward(backbone, task.config, inputs, cache=cache)
    else:
        hidden, cache = family.decode(backbone, task.config, inputs, cross, cache=cache)
    if last is None:
        hidden = hidden[:, -1:]
    else:
        hidden = ops().xp.take_along_axis(hidden, last.astype("int32")[:, None, None], axis=1)
    return task.head(params, task.config, hidden, inputs)[:, 0], cache


def new_cache(task, params, prompt_mask, total: int):
    """(prompt positions [B, Tp], an empty KVCache of `total` slots per row) for left-padded prompts.

    Slots [0, Tp) will hold the prompt (padding slots are never attended), the rest new tokens."""
    xp = ops().xp
    config = task.config
    b, tp = prompt_mask.shape
    prompt_pos = default_positions(prompt_mask).astype(xp.int32)
    next_pos = prompt_mask.astype(xp.int32).sum(1)
    new_pos = next_pos[:, None] + xp.arange(total - tp, dtype=xp.int32)[None, :]
    table = get_path(params, task.family.embedding_path(task.head))
    if table is None:  # no shared token table (Marian with separate vocabularies): the params' own dtype
        from zoohub.presets.weights import flatten

        table = next(v for v in flatten(params).values() if "float" in str(v.dtype))
    dtype = table.dtype
    layers = getattr(config, "cache_layers", None) or config.num_hidden_layers  # an encoder-decoder's decoder layers
    kv = init_cache(layers, b, total, config.kv_heads, config.dim_per_head, dtype)
    cache = KVCache(k=kv["k"], v=kv["v"], positions=xp.concatenate([prompt_pos, new_pos], axis=1).astype(xp.int32),
                    real=xp.concatenate([prompt_mask.astype(xp.int32), xp.ones((b, total - tp), xp.int32)], axis=1),
                    index=xp.int32(0))  # an int32 from the start: the decode loop carries it
    return prompt_pos, cache


def prompt_length(task, ids) -> int:
    """Slots the first model step fills: the prompt, or an encoder-decoder's one decoder start token."""
    return 1 if task.family.is_encoder_decoder else ids.shape[1]


def start_decoding(task, params, ids, mask, new_slots: int):
    """(first tokens [B, T0], their positions [B, T0], an empty KVCache of T0 + new_slots slots, cross).

    A decoder starts from the prompt itself (cross is None). An encoder-decoder encodes the prompt once,
    computes every decoder layer's cross-attention keys/values once (carried read-only through the
    loop), and starts its decoder from `task.decoder_start_token_id`."""
    family = task.family
    if not family.is_encoder_decoder:
        positions, cache = new_cache(task, params, mask, ids.shape[1] + new_slots)
        return ids, positions, cache, None
    xp = ops().xp
    backbone = family.backbone_params(params)
    hidden = family.encode(backbone, task.config, {"input_ids": ids, "attention_mask": mask})
    cross = family.cross_cache(backbone, task.config, hidden, mask)
    first = xp.full((ids.shape[0], 1), task.decoder_start_token_id, xp.int32)
    positions, cache = new_cache(task, params, xp.ones((ids.shape[0], 1), xp.int32), 1 + new_slots)
    return first, positions, cache, cross


def feed_position(cache: KVCache, index):
    """The cache with write offset `index`, and the position [B, 1] of the token fed there."""
    xp = ops().xp
    cache = cache._replace(index=index)
    if ops().name == "numpy":
        return cache, cache.positions[:, index:index + 1]
    from jax import lax

    return cache, lax.dynamic_slice_in_dim(cache.positions, xp.asarray(index, xp.int32), 1, axis=1)


def decode_numpy(task, params, ids: np.ndarray, mask: np.ndarray, s: GenerationSettings) -> Iterator[np.ndarray]:
    """Yield the tokens [B] of each step (pad after a row has stopped) until all rows stop."""
    b, tp = ids.shape[0], prompt_length(task, ids)
    first, prompt_pos, cache, cross = start_decoding(task, params, ids, mask, s.max_new_tokens)
    logits, cache = model_step(task, params, tokens=first, positions=prompt_pos, cache=cache, cross=cross)
    rng = np.random.default_rng(s.seed)
    done = np.zeros(b, bool)
    stops = np.asarray(s.stop_token_ids or [-1])
    for i in range(s.max_new_tokens):
        if s.forced_bos_token_id >= 0 or s.forced_eos_token_id >= 0:
            logits = force_tokens(logits, i, bos=s.forced_bos_token_id, eos=s.forced_eos_token_id,
                                  last_step=s.max_new_tokens - 1)
        noise = rng.gumbel(size=logits.shape).astype(np.float32) if s.do_sample else None
        tok = pick_tokens(logits, noise, do_sample=s.do_sample, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        tok = np.where(done, s.pad_token_id, tok).astype(np.int32)
        done |= np.isin(tok, stops)
        yield tok
        if done.all() or i == s.max_new_tokens - 1:
            return
        cache, position = feed_position(cache, tp + i)
        logits, cache = model_step(task, params, tokens=tok[:, None], positions=position, cache=cache, cross=cross)


# ---- stop strings and streaming -------------------------------------------------------------------

def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(x) for x in stop if x) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def trim_row(tokens: Sequence[int], stop_token_ids: Sequence[int]) -> list[int]:
    """Tokens up to and including the first stop token."""
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in stop_token_ids:
            break
    return out


class TextStream:
    """Text pieces of one row as its tokens arrive. A piece is held back while it might be the start
    of a stop string or while it ends in an incomplete character, so nothing past a stop is ever shown.

    `feed(tokens)` returns the new text ('' when none) and sets `finished` at a stop token or string;
    `flush()` returns what was held back once no more tokens come. `tokens` are those kept (before
    any stop token), `text` the text shown so far."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str], stop_token_ids: Sequence[int]):
        self.decode, self.stop, self.stop_token_ids = decode, stop, stop_token_ids
        self.tokens: list[int] = []
        self.text = ""
        self.finished = False
        self.hold = max((len(x) for x in stop), default=1) - 1

    def _show(self, ready: str) -> str:
        if len(ready) > len(self.text) and ready.startswith(self.text):
            piece, self.text = ready[len(self.text):], ready
            return piece
        return ""

    def feed(self, new: Sequence[int]) -> str:
        for t in new:
            if t in self.stop_token_ids:
                self.finished = True
                break
            self.tokens.append(int(t))
        text, hit = cut_at_stop(self.decode(self.tokens), self.stop)
        self.finished = self.finished or hit
        ready = text if self.finished else text[:max(len(self.text), len(text) - self.hold)]
        if not self.finished and ready.endswith("\ufffd"):
            ready = self.text
        return self._show(ready)

    def flush(self) -> str:
        return self._show(cut_at_stop(self.decode(self.tokens), self.stop)[0])


def stream_text(step_tokens: Iterator[list[int]], decode: Callable[[list[int]], str], stop: Sequence[str],
                stop_token_ids: Sequence[int]) -> Iterator[str]:
    """Text pieces as tokens arrive (one row), held back as `TextStream` says."""
    stream = TextStream(decode, stop, stop_token_ids)
    for new in step_tokens:
        piece = stream.feed(new)
        if piece:
            yield piece
        if stream.finished:
            return
    piece = stream.flush()
    if piece:
        yield piece
