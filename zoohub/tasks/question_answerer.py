"""QuestionAnswerer: extractive answers (`...ForQuestionAnswering`), long contexts read in overlapping
windows, spans chosen and scored the way transformers' question-answering pipeline chose them (the
pipeline of transformers 4.x; 5.x removed it)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoohub.errors import InputError, MissingFileError
from zoohub.tasks.text_task import TextTask, as_text_list
from zoohub.tasks.token_classifier import encoding_inputs

# The pipeline pushes tokens outside the context to this logit before its softmax (so they get 0).
MASKED_LOGIT = -10000.0


def _probabilities(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    x = np.where(allowed, logits, MASKED_LOGIT)
    e = np.exp(x - x.max())
    return e / e.sum()


def best_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, *, top_k: int,
               max_answer_length: int) -> list[tuple[int, int, float]]:
    """The top_k (start, end, p_start * p_end) spans of one window with start <= end < start + max_answer_length.

    Positions 0 (the CLS token) is scored 0 here; it only stands for "no answer"."""
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_length - 1)
    flat = scores.ravel()
    if top_k == 1:
        order = np.array([flat.argmax()])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        order = np.argpartition(-flat, top_k)[:top_k]
        order = order[np.argsort(-flat[order])]
    starts, ends = np.unravel_index(order, scores.shape)
    # As the pipeline did, spans are kept when both ends are allowed tokens; position 0 always passes.
    ok = allowed.copy()
    ok[0] = True
    return [(int(s), int(e), float(scores[s, e])) for s, e in zip(starts, ends) if ok[s] and ok[e]]


class QuestionAnswerer(TextTask):
    """Find the answer to a question as a span of a context (SQuAD-style extractive QA).

    Args of `from_preset`: `sequence_length`, `batch_size`, `dtype`.

    Example:
        >>> import zoohub
        >>> qa = zoohub.QuestionAnswerer.from_preset("starter_bert_tiny_en")  # bundled toy: a new, untrained head
        >>> start, end = qa.logits(["what film?"], ["a great film"])           # [B, T] each
        >>> start.shape, end.shape
        ((1, 9), (1, 9))
        >>> found = qa.answer("where is it?", "it is in paris")               # a span of the context
        >>> sorted(found), "it is in paris"[found["start"]:found["end"]] == found["answer"]
        (['answer', 'end', 'score', 'start'], True)
    """

    TASK = "question_answerer"

    @classmethod
    def _num_labels(cls, hf: dict, num_labels):
        return 2  # start and end: a missing head is made new (and must be trained)

    def logits(self, x, pairs=None) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits [B, T] each for (question, context) pairs or token-id dicts."""
        out, inputs = self._run(x, pairs)
        out = out[:, : inputs["input_ids"].shape[1]]
        return out[..., 0], out[..., 1]

    def answer(self, question: str | Sequence[str], context: str | Sequence[str], *, top_k: int = 1,
               max_answer_length: int = 15, doc_stride: int | None = None, max_seq_len: int | None = None,
               handle_impossible_answer: bool = False, align_to_words: bool = True):
        """{score, start, end, answer} (character offsets into the context); a list of the top_k when
        top_k > 1, and one result per question when questions are a list.

        A context longer than `max_seq_len` tokens (with the question; default: 384, at most
        `sequence_length`) is read in windows overlapping by `doc_stride` tokens (default:
        min(max_seq_len // 2, 128)). Scores are p(start) * p(end), softmaxed over each window's context
        tokens and CLS. `handle_impossible_answer` adds the empty answer, scored by CLS's lowest
        p(start) * p(end) over windows. `align_to_words`: spans grow to whole words."""
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer files; answer needs one for the offsets")
        single = isinstance(question, str)
        questions = as_text_list(question, "question")
        contexts = as_text_list([context] * len(questions) if isinstance(context, str) else context, "context")
        if len(contexts) != len(questions):
            raise InputError(f"got {len(questions)} questions but {len(contexts)} contexts")
        if top_k < 1 or max_answer_length < 1:
            raise InputError(f"top_k and max_answer_length must be >= 1, got {top_k} and {max_answer_length}")
        max_seq_len = max_seq_len or min(384, self.sequence_length)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if doc_stride >= max_seq_len:
            raise InputError(f"doc_stride {doc_stride} must be smaller than max_seq_len {max_seq_len}")
        results = []
        for q, c in zip(questions, contexts):
            encoding = self.tokenizer.encodings([q], [c], max_length=max_seq_len, stride=doc_stride,
                                                strategy="only_second")[0]
            windows = [encoding] + list(encoding.overflowing)
            found = self._answers(c, windows, top_k=top_k, max_answer_length=max_answer_length,
                                  handle_impossible_answer=handle_impossible_answer, align_to_words=align_to_words)
            if not found:  # an empty context: nothing to point at
                found = [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]
            results.append(found[0] if top_k == 1 else found)
        return results[0] if single else results

    def _answers(self, context: str, windows, *, top_k, max_answer_length, handle_impossible_answer,
                 align_to_words) -> list[dict]:
        logits = self._run_batches(encoding_inputs(self, windows))[0]
        cls_id = self.tokenizer.token_id("cls_token")
        null_score, answers = 1e6, []
        for window, (start_logits, end_logits) in zip(windows, logits.transpose(0, 2, 1)):
            n = len(window.ids)
            allowed = np.array([s == 1 for s in window.sequence_ids]) | (np.array(window.ids) == cls_id)
            p_start = _probabilities(start_logits[:n], allowed)
            p_end = _probabilities(end_logits[:n], allowed)
            if handle_impossible_answer:
                null_score = min(null_score, float(p_start[0] * p_end[0]))
            p_start[0] = p_end[0] = 0.0
            for s, e, score in best_spans(p_start, p_end, allowed, top_k=top_k, max_answer_length=max_answer_length):
                first, last = self._characters(window, s, e, align_to_words)
                answers.append({"score": score, "start": first, "end": last, "answer": context[first:last]})
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        return sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]

    @staticmethod
    def _characters(window, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
        """Character span in the context of tokens s..e (grown to whole words when asked and possible)."""
        first_word, last_word = window.token_to_word(s), window.token_to_word(e)
        if align_to_words and first_word is not None and last_word is not None:
            first = window.word_to_chars(first_word, sequence_index=1)
            last = window.word_to_chars(last_word, sequence_index=1)
            if first is not None and last is not None:
                return first[0], last[1]
        return window.offsets[s][0], window.offsets[e][1]
