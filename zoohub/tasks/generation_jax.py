"""Compiled generation on jax: prefill, then the whole decode loop as one `lax.while_loop` over a
static-shape KV cache. Imported only when the backend is jax.

Shapes are bucketed (batch, prompt length and new-token count round up to powers of two) so a
new prompt reuses a compiled program; the step limit is a traced value, so streaming in chunks
and early stops reuse it too. The layers run under `lax.scan` over the task's own stacked weights
(no second copy).
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zoohub.backbones.decoder import KVCache
from zoohub.backend.memory import release_free_memory
from zoohub.tasks.generation import (GenerationSettings, feed_position, force_tokens, model_step, pick_tokens,
                                     start_decoding)
from zoohub.tasks.tokenizer import bucket_length

MAX_STOP_IDS = 8


class Sampling(NamedTuple):
    """Sampler settings as traced values, so changing them does not recompile."""

    temperature: Any   # float32
    top_k: Any         # int32, 0 = off
    top_p: Any         # float32
    stops: Any         # int32 [MAX_STOP_IDS * n], -1 = unused
    pad: Any           # int32: what a row emits after it stopped
    forced_bos: Any    # int32: the first new token (-1: none)
    forced_eos: Any    # int32: the token at step `last_step` (-1: none)
    last_step: Any     # int32: max_new_tokens - 1

    @classmethod
    def of(cls, s: GenerationSettings) -> "Sampling":
        stops = np.full(MAX_STOP_IDS * max(1, -(-len(s.stop_token_ids) // MAX_STOP_IDS)), -1, np.int32)
        stops[:len(s.stop_token_ids)] = s.stop_token_ids
        return cls(temperature=jnp.float32(s.temperature), top_k=jnp.int32(s.top_k), top_p=jnp.float32(s.top_p),
                   stops=jnp.asarray(stops), pad=jnp.int32(s.pad_token_id), forced_bos=jnp.int32(s.forced_bos_token_id),
                   forced_eos=jnp.int32(s.forced_eos_token_id), last_step=jnp.int32(s.max_new_tokens - 1))


class DecodeState(NamedTuple):
    """Everything the decode loop carries from one step to the next."""

    cache: KVCache
    out: Any       # [B, N] int32: new tokens so far (pad beyond `step`)
    tok: Any       # [B] int32: the token fed next
    done: Any      # [B] bool: the row emitted a stop token
    key: Any       # PRNG key for sampling
    step: Any      # int32: tokens produced so far
    cross: Any = None  # an encoder-decoder's cross-attention keys/values, read-only (None for decoders)


def _choose(logits, sampling: Sampling, done, key, do_sample: bool, step, forced: bool):
    """The next tokens [B] (new token number `step`) and the updated stop flags."""
    if forced:
        logits = force_tokens(logits, step, bos=sampling.forced_bos, eos=sampling.forced_eos,
                              last_step=sampling.last_step)
    noise = jax.random.gumbel(key, logits.shape, jnp.float32) if do_sample else None
    tok = pick_tokens(logits, noise, do_sample=do_sample, temperature=sampling.temperature, top_k=sampling.top_k,
                      top_p=sampling.top_p)
    tok = jnp.where(done, sampling.pad, tok)
    return tok, done | jnp.isin(tok, sampling.stops)


def _programs(task) -> tuple:
    """(prefill, decode) jitted for this task (built once per task; compiled per bucket)."""
    if "generation" in task._compiled:
        return task._compiled["generation"]

    forced = task.family.is_encoder_decoder  # forced BOS/EOS tokens: only seq2seq checkpoints ask for them

    @partial(jax.jit, static_argnames=("new_slots", "do_sample"))
    def prefill(params, ids, mask, sampling: Sampling, seed, *, new_slots: int, do_sample: bool) -> DecodeState:
        first, positions, cache, cross = start_decoding(task, params, ids, mask, new_slots)
        logits, cache = model_step(task, params, tokens=first, positions=positions, cache=cache, cross=cross)
        key, sub = jax.random.split(jax.random.PRNGKey(seed))
        tok, done = _choose(logits, sampling, jnp.zeros(ids.shape[:1], bool), sub, do_sample, 0, forced)
        out = jnp.full((ids.shape[0], new_slots), sampling.pad, jnp.int32).at[:, 0].set(tok)
        return DecodeState(cache=cache, out=out, tok=tok, done=done, key=key, step=jnp.int32(1), cross=cross)

    @partial(jax.jit, static_argnames=("do_sample",), donate_argnums=(1,))
    def decode(params, state: DecodeState, sampling: Sampling, limit, *, do_sample: bool) -> DecodeState:
        prompt_length = state.cache.positions.shape[1] - state.out.shape[1]

        def running(s: DecodeState):
            return (s.step < limit) & ~jnp.all(s.done)

        def step(s: DecodeState) -> DecodeState:
            cache, position = feed_position(s.cache, prompt_length + s.step - 1)  # slot of the token fed
            logits, cache = model_step(task, params, tokens=s.tok[:, None], positions=position, cache=cache,
                                       cross=s.cross)
            key, sub = jax.random.split(s.key)
            tok, done = _choose(logits, sampling, s.done, sub, do_sample, s.step, forced)
            out = lax.dynamic_update_slice_in_dim(s.out, tok[:, None], s.step, axis=1)
            return DecodeState(cache=cache, out=out, tok=tok, done=done, key=key, step=s.step + 1, cross=s.cross)

        return lax.while_loop(running, step, state)

    task._compiled["generation"] = (prefill, decode)
    return prefill, decode


def _pad_inputs(ids: np.ndarray, mask: np.ndarray, pad_id: int, *, left: bool = True):
    """Pad to the prompt-length bucket (on the left for a decoder's prompt, on the right for an encoder's
    input, whose absolute positions count from the first column); pad the batch with copies of row 0."""
    b, t = ids.shape
    tb, bb = bucket_length(t, minimum=16), bucket_length(b, minimum=1)
    side = (tb - t, 0) if left else (0, tb - t)
    ids = np.pad(ids, ((0, 0), side), constant_values=pad_id)
    mask = np.pad(mask, ((0, 0), side))
    ids = np.concatenate([ids, np.repeat(ids[:1], bb - b, 0)])
    mask = np.concatenate([mask, np.repeat(mask[:1], bb - b, 0)])
    return ids.astype(np.int32), mask.astype(np.int32)


def decode_jax(task, params, ids: np.ndarray, mask: np.ndarray, s: GenerationSettings, *, chunk: int | None = None):
    """Yield arrays of new tokens [B, n] (pad after a row stopped): one array for the whole run,
    or one per `chunk` steps (streaming, stop strings)."""
    prefill, decode = _programs(task)
    b = ids.shape[0]
    padded_ids, padded_mask = _pad_inputs(ids, mask, s.pad_token_id, left=not task.family.is_encoder_decoder)
    new_slots = bucket_length(s.max_new_tokens, minimum=16)
    sampling = Sampling.of(s)
    compiles = prefill._cache_size() + decode._cache_size()
    state = prefill(params, padded_ids, padded_mask, sampling, jnp.uint32(s.seed), new_slots=new_slots,
                    do_sample=s.do_sample)
    shown = 0
    while True:
        limit = s.max_new_tokens if chunk is None else min(s.max_new_tokens, shown + chunk)
        state = decode(params, state, sampling, jnp.int32(limit), do_sample=s.do_sample)
        if prefill._cache_size() + decode._cache_size() != compiles:  # XLA compiled: hand back its working memory
            compiles = prefill._cache_size() + decode._cache_size()
            release_free_memory()
        step = int(state.step)
        yield np.asarray(state.out[:b, shown:step])
        shown = step
        if step >= s.max_new_tokens or bool(np.all(np.asarray(state.done)[:b])):
            return
