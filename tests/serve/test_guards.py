"""What guards the server: API keys, body size, a full queue, readiness, and the bind address."""
from __future__ import annotations

import pytest

from tests.serve.conftest import assert_error, post
from zoohub.errors import InputError

requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def guarded(server, served):
    """tiny-a behind --api-key, a 4 KiB body limit, and a second engine that never runs (its queue of
    2 fills and stays full) and is not ready until the test says so."""
    from zoohub.serve import ServerThread
    from zoohub.serve.app import Served
    from zoohub.serve.engine import Engine

    lm = served[0].task
    stalled = Served(name="stalled", task=lm, engine=Engine(lm, slots=2, context=64, max_queue=2))
    srv = ServerThread([served[0], stalled], api_key="sekret", max_body=4096, start_engines=False).start()
    try:
        yield srv, stalled.engine
    finally:
        srv.stop()


KEY = {"Authorization": "Bearer sekret"}


def test_api_key(server, guarded):
    srv, _ = guarded
    body = {"model": "tiny-a", "prompt": "the cat", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}, {"Authorization": "Basic sekret"}):
        error = assert_error(post(srv.url + "/v1/completions", body, headers=headers), 401, fragment="api key")
        assert error["type"] == "authentication_error"
    assert_error(requests.get(srv.url + "/v1/models", timeout=10), 401)
    assert_error(requests.get(srv.url + "/metrics", timeout=10), 401)
    assert post(srv.url + "/v1/completions", body, headers=KEY).status_code == 200
    assert requests.get(srv.url + "/v1/models", headers=KEY, timeout=10).status_code == 200
    assert requests.get(srv.url + "/", timeout=10).status_code == 200   # the page asks for the key itself


def test_oversized_body_is_413(server, guarded):
    srv, _ = guarded
    big = {"model": "tiny-a", "prompt": "x" * 5000}
    assert_error(post(srv.url + "/v1/completions", big, headers=KEY), 413, fragment="limit")

    def chunked():  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny-a", "prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = requests.post(srv.url + "/v1/completions", data=chunked(), headers={**KEY, "Content-Type": "application/json"},
                      timeout=10)
    assert_error(r, 413)


def test_not_ready_then_queue_full_is_503_with_retry_after(server, guarded):
    srv, stalled = guarded
    body = {"model": "stalled", "prompt": "the cat", "max_tokens": 4, "stream": True}
    health = requests.get(srv.url + "/health", timeout=10)
    assert health.status_code == 503 and health.json()["status"] == "loading"
    r = post(srv.url + "/v1/completions", body, headers=KEY)
    assert_error(r, 503, fragment="compiling")
    assert int(r.headers["Retry-After"]) >= 1
    stalled.ready.set()   # ready, but its thread never runs: what it takes stays queued
    held = [requests.post(srv.url + "/v1/completions", json=body, headers=KEY, stream=True, timeout=10)
            for _ in range(2)]
    assert [h.status_code for h in held] == [200, 200] and stalled.queued() == 2
    r = post(srv.url + "/v1/completions", body, headers=KEY)
    assert_error(r, 503, fragment="busy")
    assert int(r.headers["Retry-After"]) >= 1
    for h in held:
        h.close()
    # The other model is unaffected.
    assert post(srv.url + "/v1/completions", {"model": "tiny-a", "prompt": "a", "max_tokens": 2},
                headers=KEY).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_other_addresses_need_a_key(host):
    from zoohub.serve import check_bind

    with pytest.raises(InputError, match="--api-key"):
        check_bind(host, None, False)
    check_bind(host, "key", False)
    check_bind(host, None, True)
    for loopback in ("127.0.0.1", "localhost", "::1"):
        check_bind(loopback, None, False)


def test_cli_refuses_an_open_bind(capsys):
    from zoohub.cli import main

    code = main(["serve", "no_such_preset_needed", "--host", "0.0.0.0"])
    assert code != 0
    assert "--insecure-no-auth" in capsys.readouterr().err


def test_cli_serves_until_stopped(server, llama_folders, monkeypatch, capsys):
    """`zoohub serve FOLDER --preset FOLDER2`: both served, ready reported, then a clean stop. The
    engine's shapes are the session server's, so its compiled programs are reused (no compile)."""
    import socket
    import threading
    import time

    import zoohub.serve
    from zoohub.cli import main

    started = []

    class Recorded(zoohub.serve.ServerThread):
        def start(self, wait=True):
            started.append(self)
            return super().start(wait)

    monkeypatch.setattr(zoohub.serve, "ServerThread", Recorded)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    codes = []
    args = ["serve", str(llama_folders["tiny-a"]), "--preset", str(llama_folders["tiny-b"]), "--port", str(port),
            "--slots", "4", "--context", "128", "--prefill-chunk", "32"]
    thread = threading.Thread(target=lambda: codes.append(main(args)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{port}"
        health = None
        while thread.is_alive() and time.monotonic() < deadline:   # "loading" (503) while the engines warm up
            if started and started[0].server.started:
                health = requests.get(url + "/health", timeout=10)
                if health.status_code == 200:
                    break
            time.sleep(0.05)
        assert health is not None and health.json()["status"] == "ok", health and health.text
        ids = [m["id"] for m in requests.get(url + "/v1/models", timeout=10).json()["data"]]
        assert ids == [str(llama_folders["tiny-a"]), str(llama_folders["tiny-b"])]
        r = post(url + "/v1/completions", {"model": ids[1], "prompt": "the cat", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["model"] == ids[1]
    finally:
        if started:
            started[0].stop()
        thread.join(30)
    assert codes == [0]
    err = capsys.readouterr().err
    assert "ready in" in err and "(4 slots of 128 tokens)" in err
