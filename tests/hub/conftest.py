"""Session fixtures for the hub tests: loopback servers and tiny checkpoints. Nothing touches the internet."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Keep huggingface_hub away from any real token or cache on this machine (read at its import).
os.environ.setdefault("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "zoohub-tests-hf-home"))

from hubserver import HubServers  # noqa: E402
from staticserver import start_static  # noqa: E402

WRITE_TOKEN, READ_TOKEN = "hf_write_token", "hf_read_token"


@pytest.fixture(scope="session")
def hub():
    servers = HubServers()
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def static_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("static-root")
    server, state = start_static(root)
    yield server, state
    server.close()


@pytest.fixture(autouse=True)
def hub_env(monkeypatch, tmp_path, hub):
    """Each test: its own caches, the stand-in hub as endpoint, no token, online, quiet."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("ZOOHUB_HOME", str(tmp_path / "zoohub-home"))
    monkeypatch.setenv("ZOOHUB_QUIET", "1")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "ZOOHUB_OFFLINE", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(name, raising=False)
    yield


def manifest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size,
                                               "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "zoohub.json"}


def write_zoohub_json(folder: Path, **metadata) -> None:
    meta = {"zoohub_version": "0.1.0", **metadata, "files": manifest(folder)}
    (folder / "zoohub.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _tokenizer_json(path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [w for w in "the a model zoo hub tiny bert loads weights from cache fast".split()]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab = list(dict.fromkeys(specials + words + letters))
    vocab += [f"[unused{i}]" for i in range(97 - len(vocab))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(path))


def _save_tiny_bert(folder: Path, max_shard_size: str | None = None) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    config = BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=80, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    _tokenizer_json(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizerFast",
                                                             "do_lower_case": True}))
    return folder


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory) -> Path:
    """A tiny BERT classifier preset: config, model.safetensors, tokenizer, zoohub.json manifest."""
    folder = _save_tiny_bert(tmp_path_factory.mktemp("presets") / "tiny-bert")
    write_zoohub_json(folder, task="text_classifier", base_model="hf://google-bert/bert-base-uncased")
    return folder


@pytest.fixture(scope="session")
def sharded_preset(tmp_path_factory) -> Path:
    """The same kind of model saved in several safetensors shards with an index."""
    folder = _save_tiny_bert(tmp_path_factory.mktemp("presets") / "tiny-bert-sharded", max_shard_size="60KB")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


@pytest.fixture
def preset_copy(tiny_preset, tmp_path) -> Path:
    """A private, editable copy of the tiny preset."""
    return Path(shutil.copytree(tiny_preset, tmp_path / "preset"))


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}
