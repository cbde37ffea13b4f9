"""zoohub tag / answer / rerank, run in-process on the tiny checkpoints (numpy: nothing to compile)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import zoohub
from zoohub.backend import using
from zoohub.cli import main

CONTEXT = "paris is the capital of france and it is a great city"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["--backend", "numpy", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tag_prints_the_entities_as_json(tiny, capsys):
    folder = str(tiny.folder("bert", "token_classifier"))
    code, out, _ = run(capsys, "tag", folder, "the great film", CONTEXT, "--aggregate", "first", "--json",
                       "--ignore-label", "LABEL_0")
    assert code == 0
    printed = json.loads(out)
    with using("numpy"):
        expected = zoohub.TokenClassifier.from_preset(folder).tag(["the great film", CONTEXT], aggregate="first",
                                                                   ignore_labels=["LABEL_0"])
    assert [p["text"] for p in printed] == ["the great film", CONTEXT]
    assert [p["entities"] for p in printed] == json.loads(json.dumps(expected))
    code, out, _ = run(capsys, "tag", folder, CONTEXT)  # the table: one line per entity, under its text
    assert code == 0 and out.splitlines()[0] == CONTEXT


def test_answer_from_a_context_file(tiny, capsys, tmp_path):
    folder = str(tiny.folder("bert", "question_answerer"))
    (tmp_path / "context.txt").write_text(CONTEXT)
    code, out, _ = run(capsys, "answer", folder, "--question", "what is paris?", "--context-file",
                       str(tmp_path / "context.txt"), "--top-k", "2", "--json")
    assert code == 0
    answers = json.loads(out)
    with using("numpy"):
        expected = zoohub.QuestionAnswerer.from_preset(folder).answer("what is paris?", CONTEXT, top_k=2)
    assert [(a["start"], a["end"], a["answer"]) for a in answers] == [(a["start"], a["end"], a["answer"]) for a in expected]
    assert all(CONTEXT[a["start"]:a["end"]] == a["answer"] for a in answers)
    code, _, err = run(capsys, "answer", folder, "--question", "q?")  # neither --context nor --context-file
    assert code == 2 and "--context" in err


def test_rerank_orders_the_passages(tiny, capsys):
    folder = str(tiny.folder("bert", "text_classifier"))
    passages = ["the great film", "awful movie", CONTEXT]
    code, out, _ = run(capsys, "rerank", folder, "--query", "what is paris?", *passages, "--top-k", "2", "--json")
    assert code == 0
    ranked = json.loads(out)
    with using("numpy"):
        scores = zoohub.Reranker.from_preset(folder).score("what is paris?", passages)
    assert [r["index"] for r in ranked] == list(np.argsort(-scores)[:2])
    assert [r["score"] for r in ranked] == pytest.approx(sorted(scores, reverse=True)[:2], abs=1e-6)
