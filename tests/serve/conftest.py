"""Servers on 127.0.0.1 for the serve tests, over tiny checkpoints made by transformers.

One session server holds two tiny llamas (the same odd shapes, different weights, so `model` picks
visibly) and a tiny sentence-transformers embedder. Its engine has 4 slots of 128 tokens and
prefills in chunks of 32, so prompts of 40+ tokens are prefilled in several chunks. Everything is
shut down at the end of the session.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
requests = pytest.importorskip("requests")

from zoohub.backbones.base import TinyRecipe  # noqa: E402
from zoohub.backbones.decoder import TINY  # noqa: E402

SLOTS, CONTEXT, CHUNK = 4, 128, 32
# Odd sizes as everywhere in the suite; positions past the context so the engine's context is ours.
LLAMA = {**TINY, "max_position_embeddings": 256, "tie_word_embeddings": False, "rope_theta": 777.0}
WORDS = ("the cat sat on mat a dog ran in park hello world how are you once upon time there was tiny model "
         "zoohub generates text quickly end new part").split()


def prompt_text(i: int, words: int = 6) -> str:
    """A distinct small prompt per index, from the tokenizer's training words."""
    rng = np.random.default_rng(1000 + i)
    return " ".join(rng.choice(WORDS, words))


@pytest.fixture(scope="session")
def llama_folders(tmp_path_factory):
    """Two tiny llama checkpoints with a BPE tokenizer (vocab 97) and a chat template."""
    from tests.tiny import build

    root = tmp_path_factory.mktemp("serve")
    out = {}
    for name, seed in (("tiny-a", 21), ("tiny-b", 22)):
        build("llama", "causal_lm", root / name, recipe=TinyRecipe(config="LlamaConfig", kwargs=LLAMA, seed=seed))
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def torch_llama(llama_folders):
    return transformers.AutoModelForCausalLM.from_pretrained(llama_folders["tiny-a"]).float().eval()


@pytest.fixture(scope="session")
def embedder_folder(tiny, tmp_path_factory):
    """A sentence-transformers folder (mean pooling, normalised) around the tiny BERT."""
    dst = tmp_path_factory.mktemp("serve-emb") / "emb"
    shutil.copytree(tiny.folder("bert", "backbone"), dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return dst


@pytest.fixture(scope="session")
def served(llama_folders, embedder_folder):
    from zoohub.serve import load_served

    return [load_served(str(llama_folders["tiny-a"]), name="tiny-a", slots=SLOTS, context=CONTEXT, prefill_chunk=CHUNK),
            load_served(str(llama_folders["tiny-b"]), name="tiny-b", slots=SLOTS, context=CONTEXT, prefill_chunk=CHUNK),
            load_served(str(embedder_folder), name="emb")]


@pytest.fixture(scope="session")
def server(served):
    """The session server: {tiny-a, tiny-b, emb} on a free port of 127.0.0.1, no API key."""
    from zoohub.serve import ServerThread

    srv = ServerThread(served).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def engine(served):
    """tiny-a's engine (requests can be submitted to it directly)."""
    return served[0].engine


@pytest.fixture(scope="session")
def lm(served):
    return served[0].task


def post(url: str, body, *, headers=None, timeout: float = 60) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=timeout)


def sse(response) -> list:
    """The `data:` payloads of an SSE response, JSON-decoded ("[DONE]" kept as the string)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:].decode()
            out.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == b"", line
    return out


def assert_error(response, status: int, param=None, fragment: str = ""):
    """An OpenAI-shaped error reply with `status`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert fragment.lower() in body["error"]["message"].lower(), body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


@dataclass
class Collected:
    tokens: list
    finish: str
    logprobs: list


def run_requests(engine, requests_, timeout: float = 60) -> list[Collected]:
    """Submit engine Requests together; wait for each one's tokens and finish reason."""
    sinks = []
    for r in requests_:
        q: queue.SimpleQueue = queue.SimpleQueue()
        r.sink = q.put
        sinks.append(q)
    for r in requests_:
        engine.submit(r)
    out = []
    deadline = time.monotonic() + timeout
    for q in sinks:
        tokens, logprobs = [], []
        while True:
            ev = q.get(timeout=max(0.1, deadline - time.monotonic()))
            if ev[0] == "token":
                tokens.append(ev[1])
                logprobs.append(ev[2])
                continue
            assert ev[0] == "done", ev
            out.append(Collected(tokens, ev[1], logprobs))
            break
    return out


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def pytest_collection_modifyitems(items):
    """The serve tests share session servers: one xdist worker runs them all, so each starts once."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.xdist_group("serve"))
