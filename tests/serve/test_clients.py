"""Real clients: the official `openai` package, a client that leaves mid-stream, and 32 streaming
clients at once (every answer whole and equal to its solo greedy answer, no 5xx, memory flat)."""
from __future__ import annotations

import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.serve.conftest import post, prompt_text, rss_bytes

requests = pytest.importorskip("requests")
openai = pytest.importorskip("openai")

CLIENTS = 32
RSS_TOLERANCE = 16 << 20
"""Growth of the process's RSS allowed over a repeat of the 32-client run (bytes): allocator noise."""


def test_openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-a", "tiny-b", "emb"]
    messages = [{"role": "user", "content": "hello world"}]
    whole = client.chat.completions.create(model="tiny-a", messages=messages, max_tokens=10, temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens <= 10
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny-a", messages=messages, max_tokens=10, temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == whole.choices[0].message.content
    done = client.completions.create(model="tiny-b", prompt="the cat", max_tokens=5, temperature=0)
    assert 1 <= done.usage.completion_tokens <= 5
    assert done.model == "tiny-b" and done.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-b", prompt="the cat", max_tokens=5, temperature=0, stream=True))
    assert streamed == done.choices[0].text
    emb = client.embeddings.create(model="emb", input=["the cat", "a dog"])   # base64 on the wire
    floats = client.embeddings.create(model="emb", input=["the cat", "a dog"], encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in emb.data], [d.embedding for d in floats.data], atol=1e-7)
    assert len(emb.data[0].embedding) == 48
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-a", messages=messages, max_tokens=-3)
    assert e.value.body["param"] == "max_tokens"


def test_client_leaving_mid_stream_frees_its_slot(server, engine, monkeypatch):
    # Slow each decode step down so the stream is still running when the client leaves.
    decode = engine._decode_call

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return decode(*args, **kwargs)

    monkeypatch.setattr(engine, "_decode_call", slow)
    cancelled = engine.stats.cancelled
    r = requests.post(server.url + "/v1/completions", stream=True, timeout=30, json={
        "model": "tiny-a", "prompt": prompt_text(3), "max_tokens": 100, "temperature": 0.7, "seed": 1,
        "stream": True})
    lines = r.iter_lines()
    got = [next(lines) for _ in range(6)]
    assert all(line.startswith(b"data: ") or line == b"" for line in got)
    assert engine.running() == 1
    r.close()
    deadline = time.monotonic() + 10
    while (engine.running() or engine.stats.cancelled == cancelled) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running() == 0 and engine.stats.cancelled == cancelled + 1
    metrics = requests.get(server.url + "/metrics").text
    assert 'zoohub_running_requests{model="tiny-a"} 0' in metrics
    assert f'zoohub_cancelled_requests_total{{model="tiny-a"}} {cancelled + 1}' in metrics
    # A client of a whole (not streamed) answer that gives up waiting cancels it too.
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url + "/v1/completions", timeout=0.5, json={
            "model": "tiny-a", "prompt": prompt_text(3), "max_tokens": 100, "temperature": 0.7, "seed": 1})
    deadline = time.monotonic() + 10
    while engine.stats.cancelled == cancelled + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running() == 0 and engine.stats.cancelled == cancelled + 2


def stream_text(url: str, prompt: str, max_tokens: int) -> tuple[int, str, str]:
    r = requests.post(url + "/v1/completions", stream=True, timeout=120, json={
        "model": "tiny-a", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True})
    if r.status_code != 200:
        return r.status_code, r.text, ""
    text, reason, done = "", None, False
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            if line == b"data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            text += choice["text"]
            reason = choice["finish_reason"] or reason
    return r.status_code, text, reason if done else "incomplete"


def test_32_streaming_clients(server, engine):
    jobs = [(prompt_text(100 + i, words=2 + i % 11), 8 + (i * 7) % 24) for i in range(CLIENTS)]
    solo = [post(server.url + "/v1/completions", {"model": "tiny-a", "prompt": p, "max_tokens": m,
                                                  "temperature": 0}).json()["choices"][0] for p, m in jobs]

    def crowd():
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(lambda job: stream_text(server.url, *job), jobs))

    steps, rows = engine.stats.decode_steps, engine.stats.decode_rows
    first = crowd()
    assert (engine.stats.decode_rows - rows) / (engine.stats.decode_steps - steps) > 2   # batched, not one by one
    for (status, text, reason), want in zip(first, solo):
        assert status == 200, text
        assert (text, reason) == (want["text"], want["finish_reason"])
    gc.collect()
    before = rss_bytes()
    for _ in range(2):
        assert crowd() == first
    gc.collect()
    grown = rss_bytes() - before
    assert grown < RSS_TOLERANCE, f"RSS grew {grown / 2**20:.1f} MiB over two 32-client runs"
    assert engine.running() == 0 and engine.queued() == 0
    metrics = requests.get(server.url + "/metrics").text
    assert 'status="5' not in metrics
