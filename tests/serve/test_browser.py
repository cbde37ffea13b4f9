"""The web page at / in a real headless browser: Debian's chromium, driven by Playwright.

The server runs a tiny llama (a transformers checkpoint put on the local hub) on 127.0.0.1. The page
must stream the answer (it grows on screen while tokens arrive), end on the API's own answer for the
same settings, apply a changed setting, show the server's error for a bad one, and show the model's
card and the local hub's presets, with nothing fetched from anywhere but the server.

The browser is a system package (`apt-get install -y chromium`; .ci/run installs it), never one
that Playwright downloads. Without it this test fails: a skipped browser test would let the page rot.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ZOOHUB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]  # CI containers often have a 64 MB /dev/shm, too small for chromium
HANDLE = "local://tests/browser-llama"
PLAIN = "local://tests/browser-plain-llama"
"""The same checkpoint uploaded as transformers wrote it (no zoohub.json): a second local-hub preset."""
STEP_SECONDS = 0.03
"""Each decode step is slowed to this: the tiny model answers in milliseconds, faster than a page can
be watched streaming."""
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    import zoohub
    from zoohub.serve import ServerThread, load_served

    # The user's path onto the local hub: save with zoohub (zoohub.json: task, size), then upload.
    checkpoint = tiny.folder("llama", "causal_lm")
    saved = zoohub.CausalLM.from_preset(checkpoint).save_to_preset(tmp_path_factory.mktemp("saved") / "llama")
    zoohub.upload_preset(HANDLE, saved)
    zoohub.upload_preset(PLAIN, checkpoint)
    served = load_served(HANDLE, slots=2, context=128, prefill_chunk=32)
    engine = served.engine
    if not hasattr(engine, "_decode_call"):
        pytest.fail("Engine._decode_call (one decode step) is gone; update the slowdown in this test")
    decode = engine._decode_call

    def slow_decode(*args, **kwargs):
        time.sleep(STEP_SECONDS)
        return decode(*args, **kwargs)

    engine._decode_call = slow_decode
    thread = ServerThread([served]).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the web page test needs Debian's browser "
                    "(apt-get install -y chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('the web page test needs Playwright: pip install -e ".[test]"')
    with sync_playwright() as p:
        # A persistent context is how Playwright takes a user-data-dir: a fresh one per run.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=ARGS)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page()
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-loaded='1']")
    yield page
    outside = [u for u in requested if not u.startswith(server.url + "/")]
    assert not outside, f"the page fetched from outside the server: {outside}"


def api_answer(server, messages, **settings) -> dict:
    """The server's own (non-streamed) answer: what the page must end on."""
    body = json.dumps({"model": HANDLE, "messages": messages, **settings}).encode()
    request = urllib.request.Request(server.url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())["choices"][0]


def set_settings(page, **values) -> None:
    for name, value in values.items():
        page.fill(f"#{name}", str(value))


def ask(page, text: str) -> dict:
    """Clear the chat, send `text`, wait for the answer; returns its text, finish reason, token count and
    the lengths the answer showed while it streamed (from a MutationObserver, with times)."""
    page.click("#clear")
    page.evaluate("""() => {
        window.growth = [];
        const log = document.getElementById("log");
        window.watcher && window.watcher.disconnect();
        window.watcher = new MutationObserver(() => {
            const out = log.querySelector(".assistant");
            if (out) window.growth.push([performance.now(), out.textContent.length, out.classList.contains("streaming")]);
        });
        window.watcher.observe(log, {childList: true, subtree: true, characterData: true, attributes: true});
    }""")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.querySelector('#log .assistant[data-done], #log .error')")
    if page.locator("#log .error").count():
        return {"error": page.locator("#log .error").inner_text()}
    page.wait_for_selector("#log .meta")
    out = page.locator("#log .assistant")
    return {"text": out.text_content(), "finish": out.get_attribute("data-finish"),
            "tokens": page.locator("#log .meta").get_attribute("data-tokens"),
            "growth": page.evaluate("window.growth")}


def test_card_and_local_hub_presets(page, server):
    card = dict(zip(page.locator("#card td:first-child").all_text_contents(),
                    page.locator("#card td:last-child").all_text_contents()))
    lm = server.served[0].task
    assert card["id"] == HANDLE and card["family"] == "llama" and card["task"] == "causal_lm"
    assert card["parameters"] == f"{lm.num_params():,}"
    assert card["context (tokens)"] == "128" and card["slots"] == "2"
    config = page.locator("#config td:first-child").all_text_contents()
    assert {"hidden_size", "num_attention_heads", "vocab_size"} <= set(config)
    assert page.locator("#model option").all_text_contents() == [HANDLE]
    preset = page.locator(f"#presets li[data-handle='{HANDLE}']")
    assert preset.count() == 1 and preset.inner_text() == f"{HANDLE} (causal_lm, {lm.num_params():,} parameters)"
    assert page.locator(f"#presets li[data-handle='{PLAIN}']").inner_text() == f"{PLAIN} (LlamaForCausalLM)"
    assert page.locator("#status").inner_text() == "ready"


def test_streamed_answer_is_the_apis_greedy_answer(page, server):
    set_settings(page, temperature=0, top_p=1, max_tokens=30, seed="")
    got = ask(page, "hello world")
    want = api_answer(server, [{"role": "user", "content": "hello world"}], temperature=0, max_tokens=30)
    assert got["text"] == want["message"]["content"] and got["finish"] == want["finish_reason"]
    assert len(want["message"]["content"]) > 10
    # The answer grew on screen while it streamed: several partial lengths, rising, over time.
    partial = [(t, n) for t, n, streaming in got["growth"] if streaming and 0 < n < len(got["text"])]
    lengths = [n for _, n in partial]
    assert len(set(lengths)) >= 5, got["growth"]
    assert lengths == sorted(lengths)
    assert partial[-1][0] - partial[0][0] > 5 * STEP_SECONDS * 1000, got["growth"]
    assert page.locator("#log .user").inner_text() == "hello world"


def test_changed_settings_take_effect(page, server):
    messages = [{"role": "user", "content": "once upon a time"}]
    set_settings(page, temperature=0, max_tokens=7, seed="")
    got = ask(page, "once upon a time")
    want = api_answer(server, messages, temperature=0, max_tokens=7)
    assert (got["text"], got["finish"], got["tokens"]) == (want["message"]["content"], "length", "7")
    # Sampling with a seed: the page's answer is the API's for that seed, not the greedy one.
    set_settings(page, temperature=1.5, top_p=0.95, max_tokens=12, seed=5)
    sampled = ask(page, "once upon a time")
    want_sampled = api_answer(server, messages, temperature=1.5, top_p=0.95, max_tokens=12, seed=5)
    greedy = api_answer(server, messages, temperature=0, max_tokens=12)
    assert sampled["text"] == want_sampled["message"]["content"]
    assert sampled["text"] != greedy["message"]["content"]


def test_bad_setting_shows_the_error(page, server):
    set_settings(page, temperature=0, max_tokens=-3, seed="")
    got = ask(page, "hello")
    # The server's 400 message, naming the field; the field is marked; no answer is left behind.
    assert "max_tokens" in got["error"] and "-3" in got["error"], got
    assert page.locator("#max_tokens").get_attribute("aria-invalid") == "true"
    assert page.locator("#log .assistant").count() == 0
    with pytest.raises(urllib.error.HTTPError) as e:
        api_answer(server, [{"role": "user", "content": "hello"}], max_tokens=-3)
    assert e.value.code == 400
    set_settings(page, max_tokens=2.5)
    assert "max_tokens: expected an integer" in ask(page, "hello")["error"]
    # Fixed, the next message is answered and the mark is gone.
    set_settings(page, max_tokens=4)
    assert ask(page, "hello")["tokens"] == "4"
    assert page.locator("#max_tokens").get_attribute("aria-invalid") is None
