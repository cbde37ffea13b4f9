"""TokenClassifier.tag, QuestionAnswerer.answer and Reranker against transformers on the tiny checkpoints."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

import zoohub
from zoohub.backend import using

from .conftest import torch, transformers

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
# Words outside the tiny vocabularies split into pieces; "," and "!" are unknown to the WordPiece one.
TAG_TEXTS = ["paris is the capital of france, says zoohub", "the great film", "a dog ran in the park!"]
QUESTION = "what is the capital of france?"
LONG_CONTEXT = ("paris is the capital of france and it is a great city . the film was awful but the city "
                "was great . a dog ran in the park of paris")


def _relabelled(folder, tmp, labels):
    """A copy of a tiny checkpoint with named labels (and as many classes), for ours and transformers'."""
    out = tmp / folder.name
    shutil.copytree(folder, out)
    config = json.loads((out / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    config["label2id"] = {name: i for i, name in enumerate(labels)}
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def taggers(tiny, tmp_path_factory):
    """model_type -> (our TokenClassifier, transformers' model, tokenizer) with 5 IOB labels."""
    out = {}
    for model_type in ("bert", "roberta"):
        folder, _, tokenizer = tiny(model_type, "token_classifier")
        # 5 labels where the tiny head has 3: build the head anew, in transformers, from the same config
        model = transformers.AutoModelForTokenClassification.from_pretrained(
            folder, num_labels=5, id2label=dict(enumerate(NER_LABELS)), label2id={n: i for i, n in enumerate(NER_LABELS)},
            ignore_mismatched_sizes=True).eval()
        # A new head of its own seed and scale, whatever ran before in this process: it tags many tokens
        with torch.no_grad():
            head = model.classifier.weight
            head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(5)) * 2.0)
        saved = tmp_path_factory.mktemp(model_type)
        model.save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        with using("numpy"):  # nothing to compile: the jax path is checked once below
            out[model_type] = (zoohub.TokenClassifier.from_preset(saved), model, tokenizer)
    return out


def _same(ours: list[dict], theirs: list[dict]):
    assert [sorted(e) for e in ours] == [sorted(e) for e in theirs]
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert abs(a["score"] - float(b["score"])) <= 1e-4


@pytest.mark.parametrize("aggregate", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_tag_matches_the_pipeline(taggers, model_type, aggregate):
    ours, model, tokenizer = taggers[model_type]
    pipe = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer,
                                 aggregation_strategy=aggregate, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # byte-level BPE: the pipeline warns about its word heuristic
        theirs = pipe(TAG_TEXTS)
    found = ours.tag(TAG_TEXTS, aggregate=aggregate)
    assert sum(len(f) for f in found) >= 1  # the random head labels some tokens other than "O"
    for a, b in zip(found, theirs):
        _same(a, b)
    everything = ours.tag(TAG_TEXTS[0], aggregate=aggregate, ignore_labels=[])
    assert len(everything) >= len(found[0])
    assert all(0 <= e["start"] <= e["end"] <= len(TAG_TEXTS[0]) for e in everything)  # offsets into the text


def test_tag_on_jax_equals_numpy(taggers):
    ours = taggers["bert"][0]
    with using("jax"):
        jax_model = zoohub.TokenClassifier.from_preset(ours.metadata["source"])
    _same(jax_model.tag(TAG_TEXTS[0], aggregate="average"), ours.tag(TAG_TEXTS[0], aggregate="average"))


# ---- question answering: the algorithm of transformers 4.x's question-answering pipeline -----------

def _reference_answers(model, tokenizer, question, context, *, top_k, max_answer_len, doc_stride, max_seq_len,
                       handle_impossible_answer):
    """The pipeline's answers (transformers 5 removed it), from transformers' tokenizer windows and logits."""
    enc = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest",
                    return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if not isinstance(model, transformers.BertPreTrainedModel):
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        out = model(**inputs)
    null, answers = 1e6, []
    for w in range(len(enc["input_ids"])):
        ids = enc["input_ids"][w].numpy()
        p_mask = np.array([s != 1 for s in enc.sequence_ids(w)], dtype=np.int64)
        p_mask[ids == tokenizer.cls_token_id] = 0
        desired = (np.abs(p_mask - 1) & enc["attention_mask"][w].numpy())[None]
        probs = []
        for logits in (out.start_logits[w].numpy()[None], out.end_logits[w].numpy()[None]):
            x = np.where(desired == 0, -10000.0, logits)
            x = np.exp(x - x.max(-1, keepdims=True))
            probs.append(x / x.sum())
        start, end = probs
        if handle_impossible_answer:
            null = min(null, float(start[0, 0] * end[0, 0]))
        start[0, 0] = end[0, 0] = 0.0
        candidates = np.tril(np.triu(np.matmul(start[..., None], end[:, None, :])), max_answer_len - 1)
        flat = candidates.flatten()
        order = np.argsort(-flat, kind="stable")[:top_k]
        starts, ends = np.unravel_index(order, candidates.shape)[1:]
        keep = np.isin(starts, desired.nonzero()) & np.isin(ends, desired.nonzero())
        encoding = enc.encodings[w]
        for s, e in zip(starts[keep], ends[keep]):
            a = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
            b = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
            answers.append({"score": float(candidates[0, s, e]), "start": a, "end": b, "answer": context[a:b]})
    if handle_impossible_answer:
        answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k], len(enc["input_ids"])


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("handle_impossible_answer", [False, True])
def test_answer_matches_the_pipeline_over_windows(tiny, model_type, handle_impossible_answer):
    folder, model, tokenizer = tiny(model_type, "question_answerer")
    settings = dict(top_k=3, doc_stride=8, max_seq_len=28, handle_impossible_answer=handle_impossible_answer)
    theirs, windows = _reference_answers(model, tokenizer, QUESTION, LONG_CONTEXT, max_answer_len=6, **settings)
    assert windows >= 3  # the context did not fit: several overlapping windows
    qa = zoohub.QuestionAnswerer.from_preset(folder)
    ours = qa.answer(QUESTION, LONG_CONTEXT, max_answer_length=6, **settings)
    assert [(a["start"], a["end"], a["answer"]) for a in ours] == [(a["start"], a["end"], a["answer"]) for a in theirs]
    np.testing.assert_allclose([a["score"] for a in ours], [a["score"] for a in theirs], atol=1e-4, rtol=0)
    best = qa.answer(QUESTION, LONG_CONTEXT, max_answer_length=6, **{**settings, "top_k": 1})
    assert best == ours[0]


# ---- reranking -----------------------------------------------------------------------------------

PASSAGES = ["paris is the capital of france", "the film was awful", "a dog ran in the park", "the great city"]


@pytest.fixture(scope="module")
def cross_encoder(tiny, tmp_path_factory):
    """A one-logit BERT cross-encoder (as ms-marco rerankers are), saved by transformers."""
    folder, model, tokenizer = tiny("bert", "text_classifier")
    config = model.config.__class__(**{**model.config.to_dict(), "num_labels": 1, "id2label": None, "label2id": None})
    torch.manual_seed(5)
    one = transformers.BertForSequenceClassification(config).eval()
    out = tmp_path_factory.mktemp("cross_encoder")
    one.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, one, tokenizer


def _torch_logits(model, tokenizer, query, passages):
    enc = tokenizer([query] * len(passages), passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def test_reranker_scores_are_sigmoid_logits_and_order_follows(cross_encoder):
    folder, model, tokenizer = cross_encoder
    reranker = zoohub.Reranker.from_preset(folder)
    assert reranker.activation == "Sigmoid"
    logits = _torch_logits(model, tokenizer, QUESTION, PASSAGES)[:, 0]
    expected = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(reranker.score(QUESTION, PASSAGES), expected, atol=1e-5)
    np.testing.assert_allclose(reranker.score([(QUESTION, p) for p in PASSAGES]), expected, atol=1e-5)
    ranked = reranker.rerank(QUESTION, PASSAGES, top_k=3)
    assert [r["index"] for r in ranked] == list(np.argsort(-logits)[:3])
    assert all(r["text"] == PASSAGES[r["index"]] for r in ranked)


def test_reranker_reads_the_sentence_transformers_activation(cross_encoder, tmp_path):
    folder, model, tokenizer = cross_encoder
    shutil.copytree(folder, tmp_path / "identity")
    config = json.loads((tmp_path / "identity" / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (tmp_path / "identity" / "config.json").write_text(json.dumps(config))
    reranker = zoohub.Reranker.from_preset(tmp_path / "identity")
    np.testing.assert_allclose(reranker.score(QUESTION, PASSAGES),
                               _torch_logits(model, tokenizer, QUESTION, PASSAGES)[:, 0], atol=1e-4)
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.activation.ReLU"
    (tmp_path / "identity" / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoohub.errors.UnsupportedConfigError, match="ReLU"):
        zoohub.Reranker.from_preset(tmp_path / "identity")


def test_reranker_with_classes_scores_the_relevant_column(tiny):
    folder, model, tokenizer = tiny("bert", "text_classifier")  # 3 classes
    reranker = zoohub.Reranker.from_preset(folder, relevant_label=1)
    logits = _torch_logits(model, tokenizer, QUESTION, PASSAGES)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(reranker.score(QUESTION, PASSAGES), (p / p.sum(-1, keepdims=True))[:, 1], atol=1e-5)
