"""Beam search, step for step the algorithm of transformers' `GenerationMixin._beam_search`
(vectorised running/finished beams, length penalty, `early_stopping` heuristics), so the same
checkpoint gives the same beams. The bookkeeping runs in numpy on the host; the model step
(reorder the cache, feed one token per beam) is jit-compiled on jax.
"""
from __future__ import annotations

import numpy as np

from zoohub.backend import ops
from zoohub.errors import InputError
from zoohub.tasks.generation import (GenerationSettings, feed_position, force_tokens, model_step, prompt_length,
                                     start_decoding, trim_row)
from zoohub.tasks.probabilities import log_softmax

_NEG = -1.0e9


def _topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, idx, -1), idx


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x [B, M, ...] gathered along M by idx [B, k]."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _model(task, params, ids: np.ndarray, mask: np.ndarray, max_new: int):
    """(prefill() -> logits, step(tokens, g, origins) -> logits) over a cache of B*beams rows.

    An encoder-decoder's inputs come repeated per beam, so its cross-attention keys/values are per beam
    row already and never reordered: a beam's origin is always a row of the same input."""
    o = ops()
    xp = o.xp
    tp = prompt_length(task, ids)

    def start(params, ids, mask):
        first, positions, cache, cross = start_decoding(task, params, ids, mask, max_new)
        logits, cache = model_step(task, params, tokens=first, positions=positions, cache=cache, cross=cross)
        return logits, cache, cross

    def reorder_and_step(params, tokens, cache, index, origins, cross):
        cache, position = feed_position(cache._replace(k=cache.k[:, origins], v=cache.v[:, origins]), index)
        return model_step(task, params, tokens=tokens, positions=position, cache=cache, cross=cross)

    if o.name == "jax":
        start, reorder_and_step = o.jit(start), o.jit(reorder_and_step)
    state = {}

    def prefill():
        logits, state["cache"], state["cross"] = start(params, xp.asarray(ids), xp.asarray(mask))
        return o.to_numpy(logits)

    def step(tokens: np.ndarray, g: int, origins: np.ndarray):
        tokens = xp.asarray(tokens[:, None].astype(np.int32))
        logits, state["cache"] = reorder_and_step(params, tokens, state["cache"], np.int32(tp + g - 1),
                                                  xp.asarray(origins), state["cross"])
        return o.to_numpy(logits)

    return prefill, step


def beam_search(task, params, ids: np.ndarray, mask: np.ndarray, s: GenerationSettings,
                num_return: int = 1) -> list[list[int]]:
    """The `num_return` best beams per prompt (prompt by prompt, best first): new tokens, up to and
    including a stop token."""
    if not 1 <= num_return <= s.num_beams:
        raise InputError(f"num_return_sequences={num_return} must be between 1 and num_beams={s.num_beams}")
    b, nb, max_new = ids.shape[0], s.num_beams, s.max_new_tokens
    prefill, step = _model(task, params, np.repeat(ids, nb, 0), np.repeat(mask, nb, 0), max_new)
    eos = np.asarray(s.stop_token_ids, np.int64)
    keep = max(2, 1 + len(eos)) * nb
    top_num_beam_mask = np.arange(keep) < nb
    fill = s.pad_token_id
    running = np.full((b, nb, max_new), fill, np.int64)
    running_scores = np.zeros((b, nb), np.float32)
    running_scores[:, 1:] = _NEG
    sequences = running.copy()
    scores = np.full((b, nb), _NEG, np.float32)
    finished = np.zeros((b, nb), bool)
    improvable = np.ones((b, 1), bool)
    logits = prefill()
    g = 0
    while True:
        vocab = logits.shape[-1]
        log_probs = log_softmax(logits)
        if s.forced_bos_token_id >= 0 or s.forced_eos_token_id >= 0:  # transformers forces after log_softmax
            log_probs = force_tokens(log_probs, g, bos=s.forced_bos_token_id, eos=s.forced_eos_token_id,
                                     last_step=max_new - 1, xp=np)
        log_probs = log_probs.reshape(b, nb, vocab) + running_scores[:, :, None]
        top_scores, top_idx = _topk(log_probs.reshape(b, nb * vocab), keep)
        beam, tok = top_idx // vocab, top_idx % vocab
        top_seqs = _gather(running, beam)
        top_seqs[:, :, g] = tok
        hits = np.isin(tok, eos) | (g + 1 >= max_new)
        # running beams: the best `nb` candidates that did not stop
        _, next_idx = _topk(top_scores + hits * _NEG, nb)
        running = _gather(top_seqs, next_idx)
        running_scores = _gather(top_scores + hits * _NEG, next_idx).astype(np.float32)
        origins = (_gather(beam, next_idx) + np.arange(b)[:, None] * nb).reshape(-1)
        # finished beams: merge the candidates that stopped among the top `nb`
        just_finished = hits & top_num_beam_mask[None, :]
        cand = top_scores / ((g + 1) ** s.length_penalty)
        cand = cand + (finished.all(-1, keepdims=True) & (s.early_stopping is True)) * _NEG
        cand = cand + (~improvable) * _NEG + (~just_finished) * _NEG
        merged_scores = np.concatenate([scores, cand], 1)
        _, best = _topk(merged_scores, nb)
        sequences = _gather(np.concatenate([sequences, top_seqs], 1), best)
        scores = _gather(merged_scores, best).astype(np.float32)
        finished = _gather(np.concatenate([finished, just_finished], 1), best)
        g += 1
        # stop when no running beam can beat the worst finished one (transformers' heuristic)
        length = max_new if (s.early_stopping == "never" and s.length_penalty > 0) else g
        best_possible = running_scores[:, :1] / (length ** s.length_penalty)
        worst = np.where(finished, scores.min(1, keepdims=True), _NEG)
        improvable = improvable & np.any(best_possible > worst, -1, keepdims=True)
        if not (improvable.any() and not (finished.all() and s.early_stopping is True) and not hits.all()):
            break
        logits = step(running[:, :, g - 1].reshape(-1), g, origins)
    return [trim_row(row[:max_new], s.stop_token_ids) for row in sequences[:, :num_return].reshape(-1, max_new)]
