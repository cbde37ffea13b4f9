"""The OpenAI endpoints over HTTP: shapes, sampling fields, streaming, usage, several models, and
errors in OpenAI's shape with the right status."""
from __future__ import annotations

import pytest

from tests.serve.conftest import CONTEXT, assert_error, post, prompt_text, sse

requests = pytest.importorskip("requests")
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


def chat(server, **body):
    return post(server.url + "/v1/chat/completions", {"model": "tiny-a", "messages": CHAT, **body})


def complete(server, **body):
    return post(server.url + "/v1/completions", {"model": "tiny-a", "prompt": prompt_text(0), **body})


def test_models_health_and_metrics(server):
    models = requests.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-a", "tiny-b", "emb"]
    card = requests.get(server.url + "/v1/models/tiny-a").json()
    assert card["id"] == "tiny-a" and card["context"] == CONTEXT and card["ready"] and card["family"] == "llama"
    assert_error(requests.get(server.url + "/v1/models/nope"), 404, "model")
    # A request never names a file to read: a path or a folder as the model is just an unknown name.
    folder = str(server.served[0].loaded_from)
    for name in ("../../etc/passwd", "/etc/passwd", folder):
        assert_error(requests.get(server.url + "/v1/models/" + name), 404)
        assert_error(post(server.url + "/v1/completions", {"model": name, "prompt": "a"}), 404, "model")
    health = requests.get(server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    complete(server, max_tokens=3)
    text = requests.get(server.url + "/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in text.text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    for name in ("requests_total", "generated_tokens_total", "queue_length", "running_requests", "tokens_per_second"):
        assert f'zoohub_{name}{{model="tiny-a"}}' in samples
    assert samples['zoohub_requests_total{model="tiny-a"}'] >= 1
    assert samples['zoohub_generated_tokens_total{model="tiny-a"}'] >= 3
    assert samples['zoohub_time_to_first_token_seconds_count{model="tiny-a"}'] >= 1
    assert samples['zoohub_http_responses_total{path="/v1/completions",status="200"}'] >= 1


def test_chat_shape_usage_and_max_tokens(server):
    r = chat(server, max_tokens=7, temperature=0)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["model"] == "tiny-a"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["completion_tokens"] <= 7 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 7
    # The prompt is the chat template's text, encoded.
    lm = server.served[0].task
    prompt = lm.preprocessor.encode([lm.apply_chat_template(CHAT)], add_special_tokens=False)[0]
    assert usage["prompt_tokens"] == len(prompt)


def test_stream_equals_non_stream(server):
    whole = chat(server, max_tokens=12, temperature=0).json()
    events = sse(requests.post(server.url + "/v1/chat/completions", stream=True, timeout=60, json={
        "model": "tiny-a", "messages": CHAT, "max_tokens": 12, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}}))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == whole["choices"][0]["finish_reason"] and set(reasons[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    # Completions stream the same way.
    whole = complete(server, max_tokens=10, temperature=0).json()
    events = sse(requests.post(server.url + "/v1/completions", stream=True, timeout=60, json={
        "model": "tiny-a", "prompt": prompt_text(0), "max_tokens": 10, "temperature": 0, "stream": True}))
    assert events[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in events[:-1])
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == whole["choices"][0]["text"]


def test_seed_temperature_top_p(server):
    def text(**kw):
        return complete(server, max_tokens=16, **kw).json()["choices"][0]["text"]

    a = text(temperature=1.5, seed=3)
    assert text(temperature=1.5, seed=3) == a
    assert len({text(temperature=1.5, seed=s) for s in range(4, 8)} | {a}) > 1
    # top_p this small keeps only the most likely token: greedy.
    assert text(temperature=1.5, top_p=1e-6, seed=11) == text(temperature=0)


def test_n_choices_and_stop(server):
    body = complete(server, max_tokens=12, temperature=1.0, seed=5, n=3).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in body["choices"]}) > 1
    assert body["usage"]["completion_tokens"] <= 36
    greedy = complete(server, max_tokens=12, temperature=0).json()["choices"][0]["text"]
    stop = greedy.strip()[2:4]
    assert len(stop) == 2
    cut = complete(server, max_tokens=12, temperature=0, stop=[stop]).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and stop not in cut["text"] and greedy.startswith(cut["text"])
    assert greedy[len(cut["text"]):].startswith(stop)


def test_logprobs(server):
    body = complete(server, max_tokens=6, temperature=0, logprobs=3).json()["choices"][0]["logprobs"]
    assert len(body["tokens"]) == len(body["token_logprobs"]) == len(body["top_logprobs"]) == 6
    for chosen, top in zip(body["token_logprobs"], body["top_logprobs"]):
        assert len(top) == 3 and chosen <= 0 and abs(max(top.values()) - chosen) < 1e-6  # greedy: the best one
    body = chat(server, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2).json()
    items = body["choices"][0]["logprobs"]["content"]
    assert len(items) == body["usage"]["completion_tokens"] - (body["choices"][0]["finish_reason"] == "stop")
    for item in items:
        assert len(item["top_logprobs"]) == 2 and item["top_logprobs"][0]["logprob"] == pytest.approx(item["logprob"])
    assert chat(server, max_tokens=3).json()["choices"][0]["logprobs"] is None
    # Streamed completions carry them per chunk.
    events = sse(requests.post(server.url + "/v1/completions", stream=True, timeout=60, json={
        "model": "tiny-a", "prompt": prompt_text(0), "max_tokens": 6, "temperature": 0, "logprobs": 3,
        "stream": True}))
    streamed = [x for e in events[:-1] if e["choices"][0]["logprobs"] for x in e["choices"][0]["logprobs"]["token_logprobs"]]
    whole = complete(server, max_tokens=6, temperature=0, logprobs=3).json()["choices"][0]["logprobs"]
    assert streamed == pytest.approx(whole["token_logprobs"], abs=1e-6)


def test_model_chooses_the_preset(server):
    a = complete(server, max_tokens=16, temperature=0).json()
    b = post(server.url + "/v1/completions", {"model": "tiny-b", "prompt": prompt_text(0), "max_tokens": 16,
                                              "temperature": 0}).json()
    assert a["model"] == "tiny-a" and b["model"] == "tiny-b"
    assert a["choices"][0]["text"] != b["choices"][0]["text"]


def test_embeddings(server):
    r = post(server.url + "/v1/embeddings", {"model": "emb", "input": ["the cat", "a dog ran in the park"]})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    emb = server.served[2].task
    want = emb.predict(["the cat", "a dog ran in the park"])
    import numpy as np

    np.testing.assert_allclose([d["embedding"] for d in body["data"]], want, atol=1e-6)
    assert body["usage"]["prompt_tokens"] > 0
    one = post(server.url + "/v1/embeddings", {"model": "emb", "input": "the cat"}).json()
    np.testing.assert_allclose(one["data"][0]["embedding"], want[0], atol=1e-6)
    # A causal LM is not an embedder, and an embedder does not chat.
    assert_error(post(server.url + "/v1/embeddings", {"model": "tiny-a", "input": "x"}), 400, "model")
    assert_error(post(server.url + "/v1/chat/completions", {"model": "emb", "messages": CHAT}), 400, "model")
    assert_error(post(server.url + "/v1/embeddings", {"model": "emb", "input": [1.5]}), 400, "input")


@pytest.mark.parametrize("body, param", [
    ({"max_tokens": -1}, "max_tokens"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": "9"}, "max_tokens"),
    ({"temperature": 3}, "temperature"), ({"temperature": -0.5}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"), ({"n": 99}, "n"), ({"stop": 5}, "stop"), ({"stream": "yes"}, "stream"),
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"logprobs": 99}, "logprobs"),
    ({"max_tokens": CONTEXT}, "max_tokens"), ({"prompt": "the " * 200}, "prompt"), ({"prompt": ""}, "prompt"),
    ({"prompt": [5, 1000]}, "prompt"), ({"logit_bias": {"5": 3}}, "logit_bias"), ({"echo": True}, "echo"),
    ({"frequency_penalty": 1.0}, "frequency_penalty"), ({"best_of": 3}, "best_of"), ({"suffix": "x"}, "suffix"),
])
def test_bad_completion_fields_are_400(server, body, param):
    assert_error(complete(server, **body), 400, param)


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"), ({"messages": [{"content": "x"}]}, "messages[0]"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"logprobs": "yes"}, "logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hello " * 300}]}, "messages"),
])
def test_bad_chat_fields_are_400(server, body, param):
    assert_error(chat(server, **body), 400, param)


def test_bad_requests_in_openai_shape(server):
    assert_error(post(server.url + "/v1/completions", {"model": "gpt-9", "prompt": "x"}), 404, "model", "gpt-9")
    r = requests.post(server.url + "/v1/completions", data=b"{not json", timeout=10)
    assert_error(r, 400, fragment="json")
    assert_error(requests.post(server.url + "/v1/completions", json=[1, 2], timeout=10), 400)
    assert_error(requests.get(server.url + "/v1/nothing", timeout=10), 404)
    assert_error(requests.get(server.url + "/v1/completions", timeout=10), 405)
    # The server is unharmed.
    assert complete(server, max_tokens=2).status_code == 200
    assert "error" not in requests.get(server.url + "/health").json()
