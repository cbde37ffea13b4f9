"""Per-token heads that most encoder families share, under transformers' names.

`*ForTokenClassification` is dropout then `classifier` [num_labels, D] on every token;
`*ForQuestionAnswering` is `qa_outputs` [2, D] on every token (start and end logits). A family
whose head differs (ModernBERT's extra dense + norm) writes its own `Head`.

    >>> from zoohub.backbones.heads import question_answerer
    >>> head = question_answerer("BertForQuestionAnswering", width=lambda c: c.hidden_size)
    >>> head.task, head.architecture
    ('question_answerer', 'BertForQuestionAnswering')
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoohub.backbones.base import Head
from zoohub.layers import dropout, get_path, linear

NO_DROPOUT: Callable[[Any], float] = lambda config: 0.0  # noqa: E731


def token_classifier(architecture: str, *, width: Callable[[Any], int],
                     dropout_rate: Callable[[Any], float] = NO_DROPOUT, name: str = "classifier") -> Head:
    """Dropout, then a linear `name` on every token: logits [B, T, num_labels]."""

    def apply(params, config, hidden, inputs, *, rng=None):
        return linear(get_path(params, name), dropout(hidden, dropout_rate(config), rng))

    return Head(task="token_classifier", architecture=architecture, apply=apply, trained_with_lora=(name,),
                shapes=lambda c, n: {f"{name}.weight": (n, width(c)), f"{name}.bias": (n,)})


def question_answerer(architecture: str, *, width: Callable[[Any], int],
                      dropout_rate: Callable[[Any], float] = NO_DROPOUT, name: str = "qa_outputs") -> Head:
    """Dropout, then a linear `name` to (start, end) on every token: logits [B, T, 2]."""

    def apply(params, config, hidden, inputs, *, rng=None):
        return linear(get_path(params, name), dropout(hidden, dropout_rate(config), rng))

    # transformers' QA heads always have two outputs, whatever num_labels says.
    return Head(task="question_answerer", architecture=architecture, apply=apply, trained_with_lora=(name,),
                shapes=lambda c, n: {f"{name}.weight": (2, width(c)), f"{name}.bias": (2,)})
