"""The zoohub command, run in subprocesses against the bundled starter preset and tiny local presets."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "zoohub" / "data" / "sentiment"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("zoohub_home")


def zoohub_cli(home, *args, stdin: str | None = None, timeout: int = 300):
    env = {**os.environ, "ZOOHUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "ZOOHUB_QUIET": "1",
           "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub")}  # nothing of the user's cache
    return subprocess.run([sys.executable, "-m", "zoohub.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, input=stdin)


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


README = Path(__file__).resolve().parents[2] / "README.md"
CLASSIFIED = re.compile(r"^ +(positive|negative) [\d.]+  (.+)$", re.MULTILINE)


def test_demo_runs_offline_and_accuracy_rises(home):
    out = ok(zoohub_cli(home, "demo"))  # finetune's defaults
    before, after = map(float, re.search(r"accuracy ([\d.]+)% -> ([\d.]+)%", out).groups())
    assert after >= 90.0 and after - before >= 25.0, out
    assert "tiny toy model" in out
    assert "local://me/starter-sentiment" in out
    assert (home / "hub" / "me" / "starter-sentiment" / "model.safetensors").is_file()
    card = (home / "hub" / "me" / "starter-sentiment" / "README.md").read_text()
    assert 'license: "apache-2.0"' in card and "Fine-tuned from starter_bert_tiny_en (local://zoohub/starter-bert-tiny)" in card
    # The sentences README.md shows the demo classifying, with the labels it shows: none was trained on.
    shown = {text: label for label, text in CLASSIFIED.findall(README.read_text())}
    assert {"great film", "awful film", "i loved it", "i hated it"} <= set(shown), shown
    assert {text: label for label, text in CLASSIFIED.findall(out)} == shown, out
    bundled = set()
    for name in ("train.csv", "test.csv"):
        with open(DATA / name, newline="") as f:
            bundled |= {row["text"].rstrip(".!") for row in csv.DictReader(f)}
    assert not {text.rstrip(".!") for text in shown} & bundled


def test_list_and_info_json(home):
    rows = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "list", "--json")))
    names = {r["name"] for r in rows}
    assert {"starter_bert_tiny_en", "bert_base_en_uncased"} <= names
    only = json.loads(ok(zoohub_cli(home, "list", "--task", "text_classifier", "--json")))
    assert {r["task"] for r in only} == {"text_classifier"}
    assert {r["name"] for r in only} == {r["name"] for r in rows if r["task"] == "text_classifier"}
    info = json.loads(ok(zoohub_cli(home, "info", "starter_bert_tiny_en", "--json")))
    assert info["cached"] is True and info["family"] == "bert" and info["license"] == "apache-2.0"
    assert "model.safetensors" in info["files"]


def test_info_of_an_uncached_hub_preset_says_so(home):
    info = json.loads(ok(zoohub_cli(home, "info", "bert_base_en_uncased", "--json")))
    assert info["cached"] is False and info["handle"].startswith("hf://")


def test_finetune_classify_and_upload(home, tmp_path):
    out_dir = tmp_path / "ft"
    run = zoohub_cli(home, "finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"),
                     "--validation", str(DATA / "test.csv"), "--epochs", "3", "--learning-rate", "2e-3",
                     "--output", str(out_dir))
    ok(run)
    assert (out_dir / "config.json").is_file()
    # Not a terminal: no progress bar, but one line per epoch on stderr; the preset's own labels, no warning.
    epochs = re.findall(r"^epoch (\d)/3: loss [\d.]+, accuracy [\d.]+%, val_loss [\d.]+, val_accuracy ([\d.]+)%$",
                        run.stderr, re.MULTILINE)
    assert [e for e, _ in epochs] == ["1", "2", "3"] and float(epochs[-1][1]) >= 90.0, run.stderr
    assert "warning" not in run.stderr and "it/s" not in run.stderr
    result = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "classify", str(out_dir),
                                      "the film was wonderful.", "the plot was dreadful.", "--json")))
    assert [r["label"] for r in result] == ["positive", "negative"]
    url = ok(zoohub_cli(home, "upload", str(out_dir), "local://me/cli-model")).strip()
    assert url.startswith("file://") and (home / "hub" / "me" / "cli-model" / "config.json").is_file()
    again = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "classify", "local://me/cli-model", "superb.", "--json")))
    assert again[0]["label"] in ("positive", "negative")


def test_finetune_jsonl_with_new_labels_and_lora(home, tmp_path):
    rows = [{"sentence": t, "topic": "films" if "film" in t else "other"}
            for t in ["the film was great.", "the film was dull.", "the cast was great.", "the plot was dull."] * 4]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows))
    out_dir = tmp_path / "topic"
    run = zoohub_cli(home, "finetune", "starter_bert_tiny_en", "--train", str(train), "--text-column", "sentence",
                     "--label-column", "topic", "--epochs", "1", "--lora-rank", "4", "--output", str(out_dir))
    ok(run)
    config = json.loads((out_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "films", "1": "other"}
    warning = [line for line in run.stderr.splitlines() if line.startswith("zoohub: warning:")]
    assert len(warning) == 1 and "['films', 'other'] are not among the preset's labels ['negative', 'positive']" in warning[0]
    assert "head is replaced" in warning[0]


def test_embed_writes_npy(home, tmp_path):
    lines = tmp_path / "sentences.txt"
    lines.write_text("the film was great.\n\nthe plot was dull.\n")
    out = tmp_path / "emb.npy"
    info = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "embed", "starter_bert_tiny_en", "--input", str(lines),
                                    "--output", str(out), "--json")))
    vectors = np.load(out)
    # Every line is embedded, the blank one too (as TextEmbedder.predict embeds ""): row i is line i.
    assert info["count"] == 3 and vectors.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, rtol=1e-5)
    # Without --output or --json the vectors are printed, one line per input line, as the API computes them.
    printed = zoohub_cli(home, "embed", "starter_bert_tiny_en", "--input", str(lines), "--backend", "numpy")
    rows = np.array([[float(x) for x in line.split()] for line in ok(printed).splitlines()])
    np.testing.assert_allclose(rows, vectors, rtol=1e-4, atol=1e-6)
    assert "3 embeddings of dimension 64" in printed.stderr


@pytest.mark.parametrize("args,message", [
    (["finetune", "starter_bert_tiny_en", "--train", "missing.csv", "--output", "x"], "missing.csv: no such file"),
    (["finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"), "--text-column", "body", "--output", "x"],
     "no column 'body'"),
    (["classify", "no_such_preset_anywhere", "hi"], "not found|neither a registered name"),
    (["embed", "starter_bert_tiny_en", "--input", "nope.txt"], "nope.txt: no such file"),
    (["info", "no_such_preset_anywhere"], "neither a registered name"),
    (["info", "local://me/never-uploaded"], "not in the local hub"),
    (["list", "--task", "nonsense"], "tasks: backbone, causal_lm, image_classifier, masked_lm, question_answerer, reranker, seq2seq_lm, "
     "text_classifier, text_embedder, token_classifier"),
    (["list", "--family", "nonsense"], "families: .*bert.*llama"),
    (["--backend", "numpy", "finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"), "--output", "x"],
     "finetune trains a model, which needs the jax backend, and --backend numpy is inference only; leave out"),
    (["demo", "--backend", "numpy"], "demo trains a model, which needs the jax backend"),
])
def test_bad_input_exits_2_with_one_line(home, args, message):
    result = zoohub_cli(home, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoohub: error:") and re.search(message, lines[0]), result.stderr
    assert "Traceback" not in result.stderr


def test_bad_labels_exit_2(home, tmp_path):
    val = tmp_path / "val.csv"
    val.write_text("text,label\nthe film was great.,neutral\n")
    result = zoohub_cli(home, "finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"),
                        "--validation", str(val), "--epochs", "1", "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "labels ['neutral']" in result.stderr


def test_usage_errors_exit_2(home):
    assert zoohub_cli(home, "frobnicate").returncode == 2
    assert zoohub_cli(home, "classify").returncode == 2


def test_training_on_numpy_does_not_advise_installing_jax(home):
    result = zoohub_cli(home, "--backend", "numpy", "finetune", "starter_bert_tiny_en", "--train",
                        str(DATA / "train.csv"), "--output", "x")
    assert result.returncode == 2 and "pip install" not in result.stderr  # jax is installed here


def test_error_messages_name_the_cli_verb_and_have_no_empty_hint(home):
    for name in ("bert_tiny", "qqqqqqqqqqqq"):
        line = zoohub_cli(home, "classify", name, "hi").stderr.strip()
        assert "zoohub list shows them all" in line and "list_presets" not in line, line
        assert ";(" not in line.replace(" ", "") and "; (" not in line, line
    assert "did you mean 'starter_bert_tiny_en'" in zoohub_cli(home, "classify", "bert_tiny", "hi").stderr


def test_global_options_after_the_verb_and_debug_keeps_the_exit_code(home):
    before = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "classify", "starter_bert_tiny_en", "hi", "--json")))
    after = json.loads(ok(zoohub_cli(home, "classify", "starter_bert_tiny_en", "hi", "--json", "--backend", "numpy")))
    assert before == after
    for args in (["info", "no_such_preset_anywhere"], ["download", "local://me/never-uploaded"]):
        plain = zoohub_cli(home, *args)
        debug = zoohub_cli(home, *args, "--debug")
        assert plain.returncode == debug.returncode == 2
        assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
        assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
    offline = zoohub_cli(home, "--debug", "download", "bert_base_en_uncased")  # HF_HUB_OFFLINE=1, not cached
    assert offline.returncode == 1 and "Traceback" in offline.stderr


def test_version_and_help_with_defaults(home):
    from zoohub import __version__

    assert ok(zoohub_cli(home, "--version")).strip() == f"zoohub {__version__}"
    for verb in ("demo", "list", "info", "download", "generate", "chat", "classify", "embed", "finetune", "upload", "cache"):
        text = ok(zoohub_cli(home, verb, "--help"))
        assert "usage: zoohub" in text and "--backend" in text and "--debug" in text
    demo, finetune = (" ".join(ok(zoohub_cli(home, verb, "--help")).split()) for verb in ("demo", "finetune"))
    for shared in ("--epochs EPOCHS passes over the training data (default: 3)",
                   "--batch-size BATCH_SIZE sentences per step (default: 16)",
                   "AdamW step size (default: 0.001,"):
        assert shared in demo and shared in finetune, shared
    assert "--text-column TEXT_COLUMN column (or JSON key) holding the text (default: text)" in finetune
    assert "a new, untrained head is made for the training labels" in finetune
    assert "(default: None)" not in finetune and "(default: False)" not in finetune


def test_list_has_a_header_and_aligned_columns(home):
    lines = ok(zoohub_cli(home, "list")).splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()][:-1]
    assert header.split() == ["NAME", "TASK", "FAMILY", "PARAMS", "HANDLE"]
    starts = [header.index(column) for column in ("TASK", "FAMILY", "HANDLE")]
    for row in rows:
        assert all(row[i - 2:i] == "  " and row[i] != " " for i in starts), row
    assert any(re.search(r"  \d+\.\dK  local://zoohub/starter-bert-tiny$", row) for row in rows), rows
    assert "PARAMS: parameters in K/M/B" in lines[-1]


def test_cache_list_and_clear(home):
    assert "huggingface_hub cache" in ok(zoohub_cli(home, "cache", "list"))
    assert "cache cleared" in ok(zoohub_cli(home, "cache", "clear"))


@pytest.fixture(scope="module")
def tiny_llama(tiny):
    return str(tiny.folder("llama", "causal_lm"))


def test_generate_streams_the_same_text_as_the_api(home, tiny_llama):
    import zoohub
    from zoohub.backend import using

    with using("numpy"):
        expected = zoohub.CausalLM.from_preset(tiny_llama).generate("the cat sat", max_new_tokens=8)
    out = ok(zoohub_cli(home, "--backend", "numpy", "generate", tiny_llama, "the cat sat", "--max-new-tokens", "8"))
    assert out == expected + "\n"


def test_chat_reads_stdin_and_uses_the_template(home, tiny_llama):
    import zoohub
    from zoohub.backend import using

    with using("numpy"):
        reply = zoohub.CausalLM.from_preset(tiny_llama).chat([{"role": "user", "content": "hello world"}],
                                                             max_new_tokens=6)
    out = ok(zoohub_cli(home, "--backend", "numpy", "chat", tiny_llama, "--max-new-tokens", "6", stdin="hello world\n\n"))
    assert out.splitlines()[1] == reply
