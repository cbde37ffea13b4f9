"""The zoohub command, run in subprocesses against the bundled starter preset and tiny local presets."""
from __future__ import annotations

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
    env = {**os.environ, "ZOOHUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "ZOOHUB_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "zoohub.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, input=stdin)


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_runs_offline_and_accuracy_rises(home):
    out = ok(zoohub_cli(home, "demo", "--epochs", "4"))
    before, after = map(float, re.search(r"accuracy ([\d.]+)% -> ([\d.]+)%", out).groups())
    assert after >= 90.0 and after - before >= 25.0, out
    assert "local://me/starter-sentiment" in out
    assert (home / "hub" / "me" / "starter-sentiment" / "model.safetensors").is_file()
    assert (home / "hub" / "me" / "starter-sentiment" / "README.md").is_file()


def test_list_and_info_json(home):
    rows = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "list", "--json")))
    names = {r["name"] for r in rows}
    assert {"starter_bert_tiny_en", "bert_base_en_uncased"} <= names
    only = json.loads(ok(zoohub_cli(home, "list", "--task", "text_classifier", "--json")))
    assert {r["task"] for r in only} == {"text_classifier"}
    info = json.loads(ok(zoohub_cli(home, "info", "starter_bert_tiny_en", "--json")))
    assert info["cached"] is True and info["family"] == "bert" and info["license"] == "apache-2.0"
    assert "model.safetensors" in info["files"]


def test_info_of_an_uncached_hub_preset_says_so(home):
    info = json.loads(ok(zoohub_cli(home, "info", "bert_base_en_uncased", "--json")))
    assert info["cached"] is False and info["handle"].startswith("hf://")


def test_finetune_classify_and_upload(home, tmp_path):
    out_dir = tmp_path / "ft"
    ok(zoohub_cli(home, "finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"),
                  "--validation", str(DATA / "test.csv"), "--epochs", "3", "--learning-rate", "2e-3",
                  "--output", str(out_dir)))
    assert (out_dir / "config.json").is_file()
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
    ok(zoohub_cli(home, "finetune", "starter_bert_tiny_en", "--train", str(train), "--text-column", "sentence",
                  "--label-column", "topic", "--epochs", "1", "--lora-rank", "4", "--output", str(out_dir)))
    config = json.loads((out_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "films", "1": "other"}


def test_embed_writes_npy(home, tmp_path):
    lines = tmp_path / "sentences.txt"
    lines.write_text("the film was great.\n\nthe plot was dull.\n")
    out = tmp_path / "emb.npy"
    info = json.loads(ok(zoohub_cli(home, "--backend", "numpy", "embed", "starter_bert_tiny_en", "--input", str(lines),
                                    "--output", str(out), "--json")))
    vectors = np.load(out)
    assert info["count"] == 2 and vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("args,message", [
    (["finetune", "starter_bert_tiny_en", "--train", "missing.csv", "--output", "x"], "missing.csv: no such file"),
    (["finetune", "starter_bert_tiny_en", "--train", str(DATA / "train.csv"), "--text-column", "body", "--output", "x"],
     "no column 'body'"),
    (["classify", "no_such_preset_anywhere", "hi"], "not found|neither a registered name"),
    (["embed", "starter_bert_tiny_en", "--input", "nope.txt"], "nope.txt: no such file"),
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


def test_help_for_each_verb(home):
    for verb in ("demo", "list", "info", "download", "generate", "chat", "classify", "embed", "finetune", "upload", "cache"):
        assert "usage: zoohub" in ok(zoohub_cli(home, verb, "--help"))


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
