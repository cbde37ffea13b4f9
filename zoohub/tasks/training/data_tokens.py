"""Training data and losses of the per-token tasks: token classification (labels per token, -100 where
ignored) and extractive QA (start and end token of the answer).

Batches carry `labels`: [B, T] int32 token labels (TokenClassifier; -100 = no loss) or [B, 2] start/end
token positions (QuestionAnswerer), beside the model inputs and `weights` (see `data`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from zoohub.backend import ops
from zoohub.errors import InputError
from zoohub.tasks.tokenizer import bucket_length, pad_batch

# `data` and `optim` list this module's adapters and losses in their tables, so what this module uses
# from them is imported inside the functions (no import cycle).

IGNORED = -100  # transformers' ignore_index: sub-words, special tokens and padding get no loss


def _padded(task, rows: list[tuple[list[int], list[int]]], labels: list[list[int]] | np.ndarray) -> dict:
    """Model inputs from (ids, type ids) rows, padded to a bucketed width, with labels and weights."""
    limit = task.sequence_length
    width = bucket_length(max(len(ids) for ids, _ in rows), maximum=limit)
    ids, mask = pad_batch([r[0] for r in rows], length=width, pad_id=task.tokenizer.pad_token_id)
    out = {"input_ids": ids, "attention_mask": mask}
    if task.family.token_types:
        out["token_type_ids"], _ = pad_batch([r[1] for r in rows], length=width, pad_id=0)
    if isinstance(labels, np.ndarray):
        out["labels"] = labels
    else:
        out["labels"] = np.full((len(rows), width), IGNORED, np.int32)
        for i, row in enumerate(labels):
            out["labels"][i, : len(row[:width])] = row[:width]
    out["weights"] = np.ones(len(rows), np.float32)
    return out


# ---- token classification -------------------------------------------------------------------

def word_labels_to_tokens(word_ids: Sequence[int | None], labels: Sequence[int], *,
                          label_all_subwords: bool = False) -> list[int]:
    """Token labels from word labels: a word's first token gets its label, its other tokens -100 (or the
    same label with `label_all_subwords`), special tokens -100.

    >>> word_labels_to_tokens([None, 0, 0, 1, None], [3, 5])
    [-100, 3, -100, 5, -100]
    """
    out, previous = [], None
    for word in word_ids:
        if word is None:
            out.append(IGNORED)
        elif word != previous or label_all_subwords:
            out.append(int(labels[word]))
        else:
            out.append(IGNORED)
        previous = word
    return out


def token_classifier_data(task, x, y=None, *, epochs: int = 1, what: str = "x"):
    """Words and word labels: `x` texts (split on whitespace) or lists of words, `y` one label (name or id)
    per word; or `x` a dict of token arrays [N, T] and `y` token labels [N, T] with -100 where ignored.
    Without `y`, `x` is a list of (words, labels) pairs. Returns a `data.Dataset`."""
    from zoohub.tasks.training.data import Dataset, _token_arrays, encode_labels

    if isinstance(x, Mapping):
        tokens = _token_arrays(x, what)
        labels = np.asarray(y if y is not None else [], dtype=np.int64)
        if labels.shape != tokens["input_ids"].shape:
            raise InputError(f"token labels have shape {labels.shape}; expected {tokens['input_ids'].shape} "
                             "as input_ids (use -100 where a token has no label)")
        if ((labels != IGNORED) & ((labels < 0) | (labels >= task.num_classes))).any():
            raise InputError(f"token labels must be class ids 0..{task.num_classes - 1} or -100")
        labels = labels.astype(np.int32)

        def take(rows) -> dict:
            sub = {k: v[rows] for k, v in tokens.items()}
            return {**sub, "labels": labels[rows], "weights": np.ones(len(rows), np.float32)}
        return Dataset(take, items=list(range(len(labels))))
    if task.tokenizer is None:
        raise InputError("this preset has no tokenizer; pass token arrays {'input_ids': ...} and token labels")
    items = list(x) if y is None else list(zip(x, y))
    if not items:
        raise InputError(f"{what} is empty; pass at least one example")
    words, word_labels = [], []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InputError(f"{what}[{i}] should be a (words, labels) pair")
        text, labels = item
        ws = text.split() if isinstance(text, str) else list(text)
        if not ws or not all(isinstance(w, str) for w in ws):
            raise InputError(f"{what}[{i}] must be a text or a non-empty list of words")
        if len(labels) != len(ws):
            raise InputError(f"{what}[{i}] has {len(ws)} words but {len(labels)} labels; give one label per word")
        words.append(ws)
        word_labels.append(encode_labels(task, labels, what=f"labels of {what}[{i}]"))
    encodings = task.tokenizer.encodings(words, max_length=task.sequence_length, is_pretokenized=True)
    rows = [(e.ids, e.type_ids) for e in encodings]
    every_piece = getattr(task, "label_all_subwords", False)  # TokenClassifier.fit's option
    labels = [word_labels_to_tokens(e.word_ids, lab, label_all_subwords=every_piece)
              for e, lab in zip(encodings, word_labels)]
    return Dataset(lambda idx: _padded(task, [rows[i] for i in idx], [labels[i] for i in idx]),
                   items=list(range(len(rows))))


def token_classification_loss(logits, batch):
    """Cross-entropy per labelled token (labels != -100), summed; accuracy over the same tokens."""
    from zoohub.tasks.training.optim import _log_softmax

    xp = ops().xp
    labels = batch["labels"]
    mask = (labels != IGNORED).astype(xp.float32) * batch["weights"][:, None]
    safe = xp.where(labels == IGNORED, 0, labels).astype(xp.int32)
    logp = _log_softmax(logits)
    nll = -xp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    correct = (logp.argmax(-1) == safe).astype(xp.float32)
    return (nll * mask).sum(), mask.sum(), (correct * mask).sum()


# ---- extractive question answering ------------------------------------------------------------

def answer_tokens(encoding, start_char: int, end_char: int) -> tuple[int, int]:
    """(first, last) token of the context span [start_char, end_char) in one window; (0, 0), the CLS
    token, when the window does not hold the whole answer."""
    context = [i for i, s in enumerate(encoding.sequence_ids) if s == 1]
    if not context:
        return 0, 0
    offsets = encoding.offsets
    if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    first = max(i for i in context if offsets[i][0] <= start_char)
    last = min(i for i in context if offsets[i][1] >= end_char)
    return first, last


def _qa_example(item, i: int, what: str) -> tuple[str, str, int, int]:
    if not isinstance(item, Mapping) or not all(k in item for k in ("question", "context", "answer_start")):
        raise InputError(f"{what}[{i}] should be a dict with 'question', 'context', 'answer_start' and 'answer'")
    answer = item.get("answer", item.get("text"))
    context, start = item["context"], item["answer_start"]
    if not isinstance(answer, str) or not isinstance(start, (int, np.integer)):
        raise InputError(f"{what}[{i}] needs 'answer' (the answer text) and an integer 'answer_start'")
    if context[start:start + len(answer)] != answer:
        raise InputError(f"{what}[{i}]: the context at answer_start={start} is "
                         f"{context[start:start + len(answer)]!r}, not the answer {answer!r}")
    return item["question"], context, int(start), int(start) + len(answer)


def question_answerer_data(task, x, y=None, *, epochs: int = 1, what: str = "x"):
    """SQuAD-style examples {question, context, answer_start, answer}: the answer's character span
    becomes its start and end tokens. A context longer than `sequence_length` is cut into windows
    overlapping by min(128, sequence_length // 2) tokens; a window without the whole answer points at CLS (0, 0)."""
    from zoohub.tasks.training.data import Dataset

    if y is not None:
        raise InputError("QuestionAnswerer.fit takes the answers inside the examples; pass y=None")
    if task.tokenizer is None:
        raise InputError("this preset has no tokenizer; QuestionAnswerer.fit needs one")
    examples = [_qa_example(item, i, what) for i, item in enumerate(x)]
    if not examples:
        raise InputError(f"{what} is empty; pass at least one example")
    stride = min(128, task.sequence_length // 2)  # the answer pipeline's default doc_stride
    rows, spans = [], []
    for question, context, start, end in examples:
        enc = task.tokenizer.encodings([question], [context], max_length=task.sequence_length, stride=stride,
                                       strategy="only_second")[0]
        for window in [enc] + list(enc.overflowing):
            rows.append((window.ids, window.type_ids))
            spans.append(answer_tokens(window, start, end))
    spans = np.asarray(spans, np.int32)
    return Dataset(lambda idx: _padded(task, [rows[i] for i in idx], spans[np.asarray(idx)]),
                   items=list(range(len(rows))))


def question_answering_loss(logits, batch):
    """transformers' QA loss per example, (CE(start) + CE(end)) / 2, with padding left out of the
    softmax (so bucket padding does not change it); correct = both ends right."""
    from zoohub.tasks.training.optim import _log_softmax

    xp = ops().xp
    real = batch["attention_mask"][..., None] > 0
    logp = _log_softmax(xp.where(real, logits, -1e9))  # [B, T, 2]
    targets = batch["labels"].astype(xp.int32)  # [B, 2]
    picked = xp.take_along_axis(logp, targets[:, None, :], axis=1)[:, 0, :]  # [B, 2]
    nll = -picked.mean(-1)
    correct = (logp.argmax(1) == targets).all(-1).astype(xp.float32)
    weights = batch["weights"]
    return (nll * weights).sum(), weights.sum(), (correct * weights).sum()
