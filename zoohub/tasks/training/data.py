"""Data adapters: user data -> fixed-shape numpy batches, one adapter per task kind (by `task.TASK`).

In-memory data (lists, arrays, dicts of token arrays) is checked whole before training starts;
iterables and generators are streamed, batch by batch, and checked as they come. Every batch has
exactly `batch_size` rows (the last one is padded with rows of weight 0) and a sequence length
rounded up to a bucket, so the jitted step compiles a few shapes only.

Batch keys: the model inputs, plus `weights` [B] (1 real row, 0 padding) and `labels` [B]
(classifiers) or `loss_mask` [B, T] (causal LM: 1 where the token is a training target).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from zoohub.errors import InputError
from zoohub.tasks.tokenizer import bucket_length, pad_batch
from zoohub.tasks.training.data_tokens import question_answerer_data, token_classifier_data

LOSS_KEYS = ("weights", "labels", "loss_mask")


# ---- shared helpers ------------------------------------------------------------------------

def _is_stream(x) -> bool:
    """Iterables that are not in-memory collections: generators, iterators, factories."""
    if callable(x) and not isinstance(x, type):
        return True
    return (not isinstance(x, (str, bytes, Sequence, np.ndarray, Mapping))) and isinstance(x, Iterable)


def _stream(x, epochs: int) -> Callable[[], Iterator]:
    """A function giving a fresh iterator per epoch; one-shot iterators allow one epoch only."""
    if callable(x):
        return lambda: iter(x())
    if iter(x) is x and epochs > 1:
        raise InputError(
            f"the training data is a one-shot iterator (e.g. a generator) but epochs={epochs}; pass a list, "
            "a re-iterable object, or a function that returns a fresh iterator each epoch")
    return lambda: iter(x)


def encode_labels(task, y, n: int | None = None, what: str = "labels") -> np.ndarray:
    """int32 class ids from ints or label names, checked against the task's classes."""
    if y is None:
        raise InputError(f"{type(task).__name__}.fit needs {what}: fit(x, y) or an iterable of (input, label)")
    values = list(y.tolist() if isinstance(y, np.ndarray) else y)
    if n is not None and len(values) != n:
        raise InputError(f"got {n} inputs but {len(values)} {what}; they must have the same length")
    names = {name: i for i, name in enumerate(task.labels)}
    out = np.empty(len(values), np.int32)
    for i, v in enumerate(values):
        if isinstance(v, str):
            if v not in names:
                raise InputError(f"{what}[{i}] = {v!r} is not one of the task's labels {task.labels}")
            out[i] = names[v]
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (
                isinstance(v, float) and v.is_integer()):
            if not 0 <= int(v) < task.num_classes:
                raise InputError(f"{what}[{i}] = {v} is out of range: this task has {task.num_classes} classes "
                                 f"(0..{task.num_classes - 1}); pass num_classes= to from_preset to change that")
            out[i] = int(v)
        else:
            raise InputError(f"{what}[{i}] is {type(v).__name__} ({v!r}); expected a class id or a label name")
    return out


def _label_what(what: str) -> str:
    return "labels" if what in ("x", "images") else f"{what} labels"


def _pad_rows(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pad the batch axis to `size` with zero rows (weight 0) so the step keeps one shape."""
    b = len(batch["weights"])
    if b == size:
        return batch
    return {k: np.pad(v, [(0, size - b)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}


def _orders(n: int, *, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    # Seeded by (seed, epoch) alone, so a resumed run sees the same order as an uninterrupted one.
    return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


class Dataset:
    """Batches for one task. `num_examples` is None for streams."""

    def __init__(self, make_batch: Callable[[list], dict], items: list | None = None,
                 stream: Callable[[], Iterator] | None = None):
        self.make_batch = make_batch
        self.items = items
        self.stream = stream

    @property
    def num_examples(self) -> int | None:
        return None if self.items is None else len(self.items)

    def num_batches(self, batch_size: int) -> int | None:
        n = self.num_examples
        return None if n is None else -(-n // batch_size)

    def batches(self, batch_size: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = False) -> Iterator[dict]:
        if self.items is not None:
            order = _orders(len(self.items), epoch=epoch, seed=seed, shuffle=shuffle)
            chunks = (order[i:i + batch_size] for i in range(0, len(order), batch_size))
            for idx in chunks:
                yield _pad_rows(self.make_batch([self.items[i] for i in idx]), batch_size)
            return
        iterator = self.stream()
        while chunk := list(itertools.islice(iterator, batch_size)):
            yield _pad_rows(self.make_batch(chunk), batch_size)


# ---- classifiers ---------------------------------------------------------------------------

def _pair(item, what: str, i: int):
    """(input, label) from a stream item: a 2-tuple or a dict with 'label'."""
    if isinstance(item, Mapping):
        if "label" not in item:
            raise InputError(f"{what}[{i}] is a dict without 'label'")
        return {k: v for k, v in item.items() if k != "label"}, item["label"]
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item
    raise InputError(f"{what}[{i}] should be an (input, label) pair or a dict with 'label', got {type(item).__name__}")


def text_classifier_data(task, x, y=None, *, epochs: int = 1, what: str = "x") -> Dataset:
    """Strings (or (text, pair) tuples) + labels, dicts of token arrays + labels, or a stream of pairs."""
    limit = task.sequence_length

    def token_batch(tokens: dict[str, np.ndarray], labels: np.ndarray) -> dict:
        length = int(tokens["attention_mask"].sum(1).max())
        width = bucket_length(length, maximum=max(limit, length))
        out = {k: _fit_width(v, width, task.tokenizer.pad_token_id if k == "input_ids" and task.tokenizer else 0)
               for k, v in tokens.items()}
        out.update(labels=labels, weights=np.ones(len(labels), np.float32))
        return out

    def encode(texts: list) -> dict[str, np.ndarray]:
        if texts and all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
            return task.preprocess([a for a, _ in texts], [b for _, b in texts])
        return task.preprocess(texts)

    if _is_stream(x):
        if y is not None:
            raise InputError("streamed data carries its labels: pass an iterable of (text, label), y=None")

        def from_stream(chunk: list) -> dict:
            pairs = [_pair(item, what, i) for i, item in enumerate(chunk)]
            texts = [p[0]["text"] if isinstance(p[0], Mapping) else p[0] for p in pairs]
            return token_batch(encode(_check_texts(texts, what)), encode_labels(task, [p[1] for p in pairs]))
        return Dataset(from_stream, stream=_stream(x, epochs))

    if isinstance(x, Mapping):
        tokens = _token_arrays(x, what)
    else:
        texts = _check_texts(list(x) if not isinstance(x, str) else [x], what)
        tokens = encode(texts)
    labels = encode_labels(task, y, len(tokens["input_ids"]), what=_label_what(what))
    return Dataset(lambda rows: token_batch({k: v[rows] for k, v in tokens.items()}, labels[rows]),
                   items=list(range(len(labels))))


def _check_texts(texts: list, what: str) -> list:
    if not texts:
        raise InputError(f"{what} is empty; pass at least one example")
    for i, t in enumerate(texts):
        ok = isinstance(t, str) or (isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t))
        if not ok:
            raise InputError(f"{what}[{i}] is {type(t).__name__} ({t!r:.40}); expected a string or a (text, pair) of strings")
    return texts


def _token_arrays(x: Mapping, what: str) -> dict[str, np.ndarray]:
    tokens = {k: np.asarray(v) for k, v in x.items()}
    ids = tokens.get("input_ids")
    if ids is None or ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise InputError(f"{what} as a dict needs an integer 'input_ids' array [N, T]")
    if len(ids) == 0:
        raise InputError(f"{what} is empty; pass at least one example")
    tokens.setdefault("attention_mask", np.ones_like(ids))
    for k, v in tokens.items():
        if v.shape != ids.shape:
            raise InputError(f"{what}[{k!r}] has shape {v.shape} but input_ids has {ids.shape}")
        tokens[k] = v.astype(np.float32 if k == "loss_mask" else np.int32)
    return tokens


def _fit_width(v: np.ndarray, width: int, pad: int) -> np.ndarray:
    if v.shape[1] >= width:
        return v[:, :width]
    return np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=pad)


def image_classifier_data(task, x, y=None, *, epochs: int = 1, what: str = "images") -> Dataset:
    """Images (HWC arrays, an [N, H, W, C] array, paths) + labels, {"pixel_values": [N, C, H, W]} + labels,
    or a stream of (image, label) pairs. Images are preprocessed batch by batch."""
    def batch(images, labels) -> dict:
        pixels = task.preprocess(images)["pixel_values"]
        return {"pixel_values": pixels, "labels": labels, "weights": np.ones(len(labels), np.float32)}

    if _is_stream(x):
        if y is not None:
            raise InputError("streamed data carries its labels: pass an iterable of (image, label), y=None")

        def from_stream(chunk: list) -> dict:
            pairs = [_pair(item, what, i) for i, item in enumerate(chunk)]
            images = [p[0]["image"] if isinstance(p[0], Mapping) else p[0] for p in pairs]
            return batch(images, encode_labels(task, [p[1] for p in pairs]))
        return Dataset(from_stream, stream=_stream(x, epochs))

    if isinstance(x, Mapping):
        pixels = np.asarray(x.get("pixel_values"))
        if pixels.ndim != 4:
            raise InputError(f"{what} as a dict needs 'pixel_values' [N, C, H, W]")
        images = {"pixel_values": pixels}
        n = len(pixels)
        take = lambda rows: {"pixel_values": pixels[rows]}  # noqa: E731
    else:
        images = [x] if isinstance(x, (str, os.PathLike)) else x
        n = len(images)
        for i, img in enumerate(images if n < 100_000 else images[:1000]):
            if isinstance(img, (str, os.PathLike)):
                if not os.path.isfile(img):
                    raise InputError(f"{what}[{i}]: file {img} does not exist")
            elif not hasattr(img, "convert") and np.ndim(img) not in (2, 3):
                raise InputError(f"{what}[{i}] has shape {np.shape(img)}; expected [H, W, C], [H, W] or a path")
        take = lambda rows: [images[i] for i in rows]  # noqa: E731
    if n == 0:
        raise InputError(f"{what} is empty; pass at least one image")
    labels = encode_labels(task, y, n, what=_label_what(what))
    return Dataset(lambda rows: batch(take(np.asarray(rows)), labels[rows]), items=list(range(n)))


# ---- causal language models ----------------------------------------------------------------

def _lm_limit(task, max_length: int | None) -> int:
    limit = max_length or getattr(task, "sequence_length", None) or task.family.max_length(task.config) or 1024
    return int(min(limit, max_length or limit))


def _lm_example(task, item, i: int, what: str, limit: int) -> tuple[list[int], list[int]]:
    """(ids, loss mask) for a string, {"text"} or {"prompt", "response"}; loss only on response tokens."""
    tok = task.tokenizer
    eos = tok.token_id("eos_token")
    if isinstance(item, Mapping) and "prompt" in item:
        if not isinstance(item.get("response"), str) or not isinstance(item["prompt"], str):
            raise InputError(f"{what}[{i}] needs string 'prompt' and 'response'")
        prompt = tok.encode_batch([item["prompt"]], max_length=None)[0][0]
        response = tok.encode_batch([item["response"]], max_length=None, add_special_tokens=False)[0][0]
        response = list(response) + ([eos] if eos is not None else [])
        ids, mask = list(prompt) + response, [0] * len(prompt) + [1] * len(response)
    else:
        text = item.get("text") if isinstance(item, Mapping) else item
        if not isinstance(text, str):
            raise InputError(f"{what}[{i}] is {type(item).__name__}; expected a string, {{'text': ...}} "
                             "or {'prompt': ..., 'response': ...}")
        ids = list(tok.encode_batch([text], max_length=None)[0][0]) + ([eos] if eos is not None else [])
        mask = [1] * len(ids)
    if sum(mask[1:limit]) == 0:
        raise InputError(f"{what}[{i}] has no target tokens within {limit} tokens (empty response, or the prompt "
                         "fills the whole length)")
    return ids[:limit], mask[:limit]


def causal_lm_data(task, x, y=None, *, epochs: int = 1, what: str = "x", max_length: int | None = None) -> Dataset:
    """Plain texts, prompt/response records, dicts of token arrays (optional `loss_mask`), or a stream of them."""
    if y is not None:
        raise InputError("CausalLM.fit takes no labels: the targets are the next tokens (pass y=None)")
    limit = _lm_limit(task, max_length)
    pad = task.tokenizer.pad_token_id if task.tokenizer else 0

    def batch(examples: list[tuple[list[int], list[int]]]) -> dict:
        width = bucket_length(max(len(ids) for ids, _ in examples), maximum=limit)
        ids, attention = pad_batch([e[0] for e in examples], length=width, pad_id=pad)
        loss_mask, _ = pad_batch([e[1] for e in examples], length=width, pad_id=0)
        return {"input_ids": ids, "attention_mask": attention, "loss_mask": loss_mask.astype(np.float32),
                "weights": np.ones(len(examples), np.float32)}

    if isinstance(x, Mapping):
        tokens = _token_arrays(x, what)
        tokens.setdefault("loss_mask", tokens["attention_mask"].astype(np.float32))

        def token_batch(rows) -> dict:
            sub = {k: v[rows] for k, v in tokens.items()}
            width = bucket_length(int(sub["attention_mask"].sum(1).max()), maximum=max(limit, tokens["input_ids"].shape[1]))
            out = {k: _fit_width(v, width, pad if k == "input_ids" else 0) for k, v in sub.items()}
            return {**out, "weights": np.ones(len(rows), np.float32)}
        return Dataset(token_batch, items=list(range(len(tokens["input_ids"]))))
    if task.tokenizer is None:
        raise InputError("this preset has no tokenizer; pass token ids as {'input_ids': ..., 'loss_mask': ...}")
    if _is_stream(x):
        return Dataset(lambda chunk: batch([_lm_example(task, it, i, what, limit) for i, it in enumerate(chunk)]),
                       stream=_stream(x, epochs))
    items = [x] if isinstance(x, str) else list(x)
    if not items:
        raise InputError(f"{what} is empty; pass at least one example")
    examples = [_lm_example(task, item, i, what, limit) for i, item in enumerate(items)]
    return Dataset(lambda rows: batch([examples[i] for i in rows]), items=list(range(len(examples))))


from zoohub.tasks.training.data_seq2seq import seq2seq_lm_data  # noqa: E402 (it imports Dataset from here)

# task.TASK -> adapter. A task kind without a row cannot be trained (yet), and says so.
ADAPTERS: dict[str, Callable[..., Dataset]] = {
    "text_classifier": text_classifier_data,
    "image_classifier": image_classifier_data,
    "causal_lm": causal_lm_data,
    "seq2seq_lm": seq2seq_lm_data,
    "token_classifier": token_classifier_data,
    "question_answerer": question_answerer_data,
}


def make_dataset(task, x, y=None, *, epochs: int = 1, what: str = "x", max_length: int | None = None) -> Dataset:
    """The Dataset for this task's kind of data (checks in-memory data whole, now)."""
    adapter = ADAPTERS.get(task.TASK)
    if adapter is None:
        raise InputError(f"{type(task).__name__} ({task.TASK}) cannot be trained; trainable tasks: {sorted(ADAPTERS)}")
    if x is None or (isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, str) and len(x) == 0):
        raise InputError(f"{what} is empty; pass at least one example")
    if adapter is causal_lm_data:
        return adapter(task, x, y, epochs=epochs, what=what, max_length=max_length)
    return adapter(task, x, y, epochs=epochs, what=what)
