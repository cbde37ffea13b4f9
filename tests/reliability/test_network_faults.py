"""Network faults from loopback servers: a truncated body, a reset connection, a flipped byte, 500
then success, a server that stalls past the read timeout, a host name that does not resolve. Each
download either recovers with the right bytes or fails within a few seconds with a one-line message
that says what happened; a failure leaves nothing in the cache that a later load takes as complete.
"""
from __future__ import annotations

import itertools
import re
import shutil
import time

import pytest

from tests.reliability.harness import files_of, make_preset
from zoohub.errors import HubError, HubUnreachableError, IntegrityError, OfflineError
from zoohub.hub import hf, static  # noqa: F401 (huggingface_hub reads HF_HUB_OFFLINE at import: online)
from zoohub.presets.resolve import resolve_preset

READ_TIMEOUT_S = 0.5
BOUND_S = 5.0  # generous: the machine is shared; each case takes well under 2 s alone
_names = itertools.count()


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return make_preset(tmp_path_factory.mktemp("faults") / "preset", seed=21)


@pytest.fixture
def served(preset, static_host, isolated, monkeypatch):
    """(url, url path of the weights, server state): a fresh copy of the preset on the static host."""
    server, state = static_host
    name = f"m{next(_names)}"
    shutil.copytree(preset, state.root / name)
    monkeypatch.setenv("ZOOHUB_READ_TIMEOUT", str(READ_TIMEOUT_S))
    state.stall_s = 3 * READ_TIMEOUT_S
    return f"{server.url}/{name}/", f"/{name}/model.safetensors", state


def timed(call):
    start = time.monotonic()
    try:
        return call(), time.monotonic() - start
    except Exception as e:
        e.seconds = time.monotonic() - start
        raise


def report(case: str, outcome: str, seconds: float) -> None:
    print(f"RELIABILITY | network: {case} | 1 | {outcome} | {seconds:.1f} s")


def gets(state, path: str) -> list[int]:
    return [status for method, p, _, status in state.log if p == path and method == "GET"]


RECOVERS = {  # fault queued on the weights -> what the client does about it
    "truncated body": (["truncate"], "resumes with Range"),
    "reset connection": (["reset"], "resumes with Range"),
    "500 then success": (["500"], "retries after a short backoff"),
    "stall past the read timeout": (["stall"], "times out, then resumes"),
}


@pytest.mark.parametrize("case", list(RECOVERS))
def test_transient_fault_recovers(case, served, preset):
    url, path, state = served
    faults, how = RECOVERS[case]
    state.faults[path] = list(faults)
    folder, seconds = timed(lambda: resolve_preset(url))
    assert files_of(folder) == files_of(preset)
    assert len(gets(state, path)) == 2, "one failed attempt, then one that succeeded"
    assert seconds < BOUND_S
    report(case, f"recovered ({how}); bytes verified", seconds)


def test_flipped_byte_is_caught_and_the_next_load_recovers(served, preset):
    url, path, state = served
    state.faults[path] = ["flip"]
    with pytest.raises(IntegrityError) as info:
        timed(lambda: resolve_preset(url))
    message = str(info.value)
    assert re.search(r"model\.safetensors from http.* is corrupt: its sha256", message) and "\n" not in message
    assert not (static.cache_folder(url) / "model.safetensors").exists(), "the corrupt bytes are not kept"
    assert info.value.seconds < BOUND_S
    folder, again = timed(lambda: resolve_preset(url))
    assert files_of(folder) == files_of(preset)
    report("flipped byte", "IntegrityError (sha256 vs zoohub.json), file evicted; next load recovers",
           info.value.seconds + again)


FAILS = {  # a fault that does not go away -> the message
    "server that keeps stalling": (["stall"] * 5, r"gave up on http.*model\.safetensors after 2 attempts "
                                                  r"\(no data within the 0\.5 s read timeout\)"),
    "server that keeps answering 500": (["500"] * 5, r"gave up on http.*model\.safetensors after 5 attempts "
                                                     r"\(it answered 500"),
}


@pytest.mark.parametrize("case", list(FAILS))
def test_lasting_fault_fails_fast_with_one_line(case, served, monkeypatch):
    url, path, state = served
    faults, pattern = FAILS[case]
    state.faults[path] = list(faults)
    with pytest.raises(HubError) as info:
        timed(lambda: resolve_preset(url))
    state.faults.pop(path, None)
    message = str(info.value)
    assert re.search(pattern, message) and "\n" not in message, message
    backoff = sum(static.BACKOFF_S * 2 ** k for k in range(static.MAX_ATTEMPTS - 1))  # 3.75 s of waiting by design
    assert info.value.seconds < BOUND_S + backoff
    monkeypatch.setenv("ZOOHUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not fully cached"):  # nothing partial is taken as complete
        resolve_preset(url)
    report(case, f"HubError: {message.split(' after ')[1].split(';')[0]}", info.value.seconds)


def test_static_host_that_does_not_resolve(isolated):
    url = "https://models.zoohub-test.invalid/bert-tiny/"
    with pytest.raises(HubUnreachableError) as info:
        timed(lambda: resolve_preset(url))
    message = str(info.value)
    assert "the host name models.zoohub-test.invalid does not resolve" in message and "\n" not in message
    assert "server errors" not in message
    assert info.value.seconds < BOUND_S
    home = isolated / "zoohub-home"
    assert not static.cache_folder(url).exists(), "a failed first fetch leaves no cache entry"
    left = [p for p in home.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert not left, left
    report("static host name that does not resolve (.invalid)", "HubUnreachableError: does not resolve; "
           "not retried; nothing cached", info.value.seconds)


def test_hf_endpoint_that_does_not_resolve(isolated, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.zoohub-test.invalid")
    with pytest.raises(HubUnreachableError) as info:
        timed(lambda: resolve_preset("hf://me/anything"))
    message = str(info.value)
    assert "the host name hub.zoohub-test.invalid does not resolve" in message and "\n" not in message
    assert info.value.seconds < BOUND_S
    report("HF_ENDPOINT host that does not resolve (.invalid)", "HubUnreachableError: does not resolve",
           info.value.seconds)
