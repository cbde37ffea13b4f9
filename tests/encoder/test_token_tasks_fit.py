"""Fine-tuning the per-token tasks: token labels with -100, QA spans, LoRA; the results load in transformers."""
from __future__ import annotations

import numpy as np
import pytest

import zoohub
from zoohub.backend import using
from zoohub.tasks.training.data_tokens import IGNORED, answer_tokens

from .conftest import torch, transformers

WORDS = [["paris", "is", "great"], ["the", "zoohub", "film"], ["france", "is", "a", "city"], ["a", "good", "park"]]
WORD_LABELS = [["B-LOC", "O", "O"], ["O", "B-PER", "O"], ["B-LOC", "O", "O", "O"], ["O", "O", "B-LOC"]]
QA = [
    {"question": "what is great?", "context": "paris is a great city", "answer": "paris", "answer_start": 0},
    {"question": "what is the capital?", "context": "the capital of france is paris", "answer": "paris",
     "answer_start": 25},
    {"question": "where did the dog run?", "context": "a dog ran in the park", "answer": "the park",
     "answer_start": 13},
]


def _torch_logits(model_class, folder, tokenizer, texts, pairs=None):
    model = getattr(transformers, model_class).from_pretrained(folder).eval()
    enc = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc), enc["attention_mask"].numpy().astype(bool)


def test_word_labels_become_first_subword_token_labels(tiny):
    folder, _, _ = tiny("bert", "masked_lm")
    tagger = zoohub.TokenClassifier.from_preset(folder, labels=["O", "B-LOC", "B-PER"])
    from zoohub.tasks.training.data_tokens import token_classifier_data

    (batch,) = token_classifier_data(tagger, [["the", "zoohub"]], [["O", "B-PER"]]).batches(1)
    tokens = [tagger.tokenizer.id_to_token(i) for i in batch["input_ids"][0]]
    assert tokens[:3] == ["[CLS]", "the", "z"] and tokens[3].startswith("##")
    n = int(batch["attention_mask"][0].sum())
    assert batch["labels"][0, :n].tolist() == [IGNORED, 0, 2] + [IGNORED] * (n - 3)
    tagger.label_all_subwords = True
    (batch,) = token_classifier_data(tagger, [["the", "zoohub"]], [["O", "B-PER"]]).batches(1)
    assert batch["labels"][0, :n].tolist() == [IGNORED, 0] + [2] * (n - 3) + [IGNORED]


def test_token_classifier_lora_fit_lowers_the_loss_and_loads_in_transformers(tiny, tmp_path):
    folder, _, tokenizer = tiny("bert", "masked_lm")
    tagger = zoohub.TokenClassifier.from_preset(folder, labels=["O", "B-LOC", "B-PER"])  # a new head
    with using("numpy"):  # nothing to compile
        before = zoohub.TokenClassifier.from_preset(folder, labels=["O", "B-LOC", "B-PER"]).evaluate(WORDS, WORD_LABELS)
    tagger.enable_lora(rank=4)  # the adapters and the new head train
    tagger.fit(WORDS, WORD_LABELS, epochs=6, batch_size=4, learning_rate=1e-2, seed=0)
    out = tagger.save_to_preset(tmp_path / "tagger")  # LoRA merged: a plain checkpoint
    with using("numpy"):
        saved = zoohub.TokenClassifier.from_preset(out)
    assert saved.evaluate(WORDS, WORD_LABELS)["loss"] < 0.7 * before["loss"]
    texts = [" ".join(w) for w in WORDS]
    ref, mask = _torch_logits("AutoModelForTokenClassification", out, tokenizer, texts)
    np.testing.assert_allclose(saved.logits(texts)[mask], ref.logits.numpy()[mask], atol=1e-4)
    assert saved.labels == ["O", "B-LOC", "B-PER"]


def test_answer_spans_become_token_positions(tiny):
    folder, _, _ = tiny("bert", "question_answerer")
    qa = zoohub.QuestionAnswerer.from_preset(folder)
    enc = qa.tokenizer.encodings([QA[2]["question"]], [QA[2]["context"]], max_length=None)[0]
    first, last = answer_tokens(enc, 13, 21)
    assert qa.tokenizer.decode(enc.ids[first:last + 1]) == "the park"
    assert answer_tokens(enc, 13, 40) == (0, 0)  # not inside the context: CLS


def test_question_answerer_fit_lowers_the_loss_and_loads_in_transformers(tiny, tmp_path):
    folder, _, tokenizer = tiny("roberta", "question_answerer")
    with using("numpy"):
        before = zoohub.QuestionAnswerer.from_preset(folder).evaluate(QA)
    qa = zoohub.QuestionAnswerer.from_preset(folder)
    qa.fit(QA, epochs=8, batch_size=3, learning_rate=1e-3, seed=0)
    out = qa.save_to_preset(tmp_path / "qa")
    with using("numpy"):
        saved = zoohub.QuestionAnswerer.from_preset(out)
    assert saved.evaluate(QA)["loss"] < 0.8 * before["loss"]
    questions, contexts = [q["question"] for q in QA], [q["context"] for q in QA]
    ref, mask = _torch_logits("AutoModelForQuestionAnswering", out, tokenizer, questions, contexts)
    start, end = saved.logits(questions, contexts)
    np.testing.assert_allclose(start[mask], ref.start_logits.numpy()[mask], atol=1e-4)
    np.testing.assert_allclose(end[mask], ref.end_logits.numpy()[mask], atol=1e-4)


def test_bad_examples_are_refused(tiny):
    folder, _, _ = tiny("bert", "question_answerer")
    qa = zoohub.QuestionAnswerer.from_preset(folder)
    with pytest.raises(zoohub.errors.InputError, match="not the answer"):
        qa.fit([{**QA[0], "answer_start": 3}])
    tagger = zoohub.TokenClassifier.from_preset(tiny.folder("bert", "token_classifier"))
    with pytest.raises(zoohub.errors.InputError, match="one label per word"):
        tagger.fit([["a", "b"]], [[0]])
