"""Tiny presets for the confinement and integrity tests, written without transformers: a one-layer
BertModel checkpoint (config, weights, WordLevel tokenizer) and the same saved by zoohub (with
zoohub.json). Test modules import the fixtures they use."""
from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 13, "hidden_size": 6,
          "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 10, "max_position_embeddings": 9}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "zoo", "hub", "model", "tiny", "loads", "fast"]


def write_checkpoint(folder: Path) -> Path:
    """A plain transformers-style checkpoint folder (no zoohub.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from zoohub.backbones import get_family
    from zoohub.presets.weights import write_weights

    family = get_family("bert")
    config = family.config_class.from_hf(CONFIG)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_weights({k: rng.normal(size=s).astype(np.float32) for k, s in family.shapes(config).items()}, folder)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}))
    return folder


@pytest.fixture(autouse=True)
def own_zoohub_home(monkeypatch, tmp_path):
    """Each test its own ZOOHUB_HOME, so records of verified files never leak between tests."""
    monkeypatch.setenv("ZOOHUB_HOME", str(tmp_path / "zoohub-home"))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "plain")


@pytest.fixture
def saved(tmp_path) -> Path:
    """A preset saved by zoohub: the checkpoint plus zoohub.json with its file manifest."""
    import zoohub

    return zoohub.Backbone.from_preset(write_checkpoint(tmp_path / "raw")).save_to_preset(tmp_path / "saved")


@contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging: opening a FIFO with no writer blocks forever."""
    def timeout(*_):
        raise TimeoutError(f"still blocked after {seconds} s: something opened a FIFO")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
