"""Training data of Seq2SeqLM: (source, target) text pairs -> encoder inputs, decoder inputs (the
targets shifted right after `decoder_start_token_id`, as transformers' `shift_right`) and labels
(the targets with their EOS; -100 on padding, ignored by the loss).

    >>> import numpy as np
    >>> batch = seq2seq_batch([([5, 6, 1], [7, 1])], start_id=0, pad_id=0)
    >>> batch["decoder_input_ids"][:, :3].tolist(), batch["labels"][:, :3].tolist()  # widths bucket to 8
    ([[0, 7, 1]], [[7, 1, -100]])
"""
from __future__ import annotations

import numpy as np

from zoohub.errors import InputError
from zoohub.tasks.tokenizer import bucket_length, pad_batch


def seq2seq_batch(pairs: list[tuple[list[int], list[int]]], *, start_id: int, pad_id: int,
                  maximum: int | None = None) -> dict[str, np.ndarray]:
    """Padded arrays (widths bucketed so jit compiles few shapes) of (source ids, target ids) pairs."""
    src_width = bucket_length(max(len(s) for s, _ in pairs), minimum=8, maximum=maximum)
    tgt_width = bucket_length(max(len(t) for _, t in pairs), minimum=8, maximum=maximum)
    ids, mask = pad_batch([s[:src_width] for s, _ in pairs], length=src_width, pad_id=pad_id)
    targets, target_mask = pad_batch([t[:tgt_width] for _, t in pairs], length=tgt_width, pad_id=pad_id)
    labels = np.where(target_mask != 0, targets, -100).astype(np.int32)
    decoder = np.concatenate([np.full((len(pairs), 1), start_id, np.int32), targets[:, :-1]], axis=1)
    decoder = np.where(np.concatenate([np.ones((len(pairs), 1), np.int32), target_mask[:, :-1]], 1) != 0,
                       decoder, pad_id).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder,
            "decoder_attention_mask": np.concatenate([np.ones((len(pairs), 1), np.int32), target_mask[:, :-1]], 1),
            "labels": labels, "weights": np.ones(len(pairs), np.float32)}


def seq2seq_lm_data(task, x, y=None, *, epochs: int = 1, what: str = "x", max_length: int | None = None):
    """`fit(sources, targets)`: two lists of strings (or x a list of (source, target) pairs, y None)."""
    from zoohub.tasks.training.data import Dataset

    if task.tokenizer is None:
        raise InputError("this preset has no tokenizer; Seq2SeqLM.fit takes (source, target) texts")
    pairs = list(x) if y is None else list(zip(x, y))
    if y is not None and len(x) != len(y):
        raise InputError(f"got {len(x)} sources but {len(y)} targets")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise InputError(f"{what}[{i}] is not a (source, target) pair of strings; pass fit(sources, targets)")
    encode = lambda texts: task.tokenizer.encode_batch(list(texts), max_length=max_length)[0]  # noqa: E731
    sources, targets = encode(p[0] for p in pairs), encode(p[1] for p in pairs)
    examples = [(list(s), list(t)) for s, t in zip(sources, targets)]
    pad = task.tokenizer.pad_token_id

    def batch(rows: list) -> dict:
        return seq2seq_batch([examples[i] for i in rows], start_id=task.decoder_start_token_id, pad_id=pad,
                             maximum=max_length)

    return Dataset(batch, items=list(range(len(examples))))


def seq2seq_lm_loss(logits, batch):
    """Token cross-entropy of the labels (position t predicts label t); -100 labels are ignored."""
    from zoohub.backend import ops
    from zoohub.tasks.training.optim import _log_softmax

    xp = ops().xp
    labels = batch["labels"]
    mask = (labels != -100).astype(xp.float32) * batch["weights"][:, None]
    logp = _log_softmax(logits)
    nll = -xp.take_along_axis(logp, xp.maximum(labels, 0)[..., None].astype(xp.int32), axis=-1)[..., 0]
    correct = (logp.argmax(-1) == labels).astype(xp.float32)
    return (nll * mask).sum(), mask.sum(), (correct * mask).sum()
