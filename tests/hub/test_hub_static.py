"""https:// static hosts through requests: cache, ETag revalidation, Range resume, retries, checksums, offline."""
from __future__ import annotations

import itertools
import shutil
import time

import pytest

from conftest import files_of, write_zoohub_json
from staticserver import start_static
from zoohub.errors import HubUnreachableError, IntegrityError, OfflineError, UnsafeFormatError
from zoohub.hub import static
from zoohub.presets.resolve import resolve_preset

_names = itertools.count()


@pytest.fixture
def served(static_server, tiny_preset):
    """(url, folder on the server, server state): a fresh copy of the tiny preset served over HTTP."""
    server, state = static_server
    name = f"p{next(_names)}"
    folder = shutil.copytree(tiny_preset, state.root / "models" / name)
    (folder / "README.md").write_text("not needed\n")
    return f"{server.url}/models/{name}/", folder, state


def gets(state, path):
    return [(headers, status) for method, p, headers, status in state.log if p == path and method == "GET"]


def test_fetch_then_revalidate_with_etags(served, tiny_preset):
    url, folder, state = served
    local = resolve_preset(url)
    assert files_of(local) == files_of(tiny_preset)  # README.md (not needed) is not fetched
    before = len(state.log)
    assert resolve_preset(url) == local
    again = state.log[before:]
    assert again and all(status == 304 for *_, status in again), "unchanged files are revalidated, not re-sent"
    assert all("If-None-Match" in headers for _, _, headers, _ in again)


def test_changed_file_is_refetched(served):
    url, folder, state = served
    resolve_preset(url)
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    write_zoohub_json(folder, task="text_classifier")
    local = resolve_preset(url)
    assert (local / "tokenizer_config.json").read_text() == '{"do_lower_case": false}'


def test_dropped_connection_resumes_with_range(served, tiny_preset):
    url, folder, state = served
    path = "/" + url.split("/", 3)[3] + "model.safetensors"
    state.drop_once.add(path)
    local = resolve_preset(url)
    assert (local / "model.safetensors").read_bytes() == (tiny_preset / "model.safetensors").read_bytes()
    attempts = gets(state, path)
    assert len(attempts) == 2 and attempts[1][0]["Range"].startswith("bytes=") and attempts[1][1] == 206
    assert int(attempts[1][0]["Range"][len("bytes="):-1]) > 0


def test_server_error_is_retried(served, tiny_preset):
    url, folder, state = served
    path = "/" + url.split("/", 3)[3] + "config.json"
    state.fail_once[path] = 503
    local = resolve_preset(url)
    assert [status for _, status in gets(state, path)] == [503, 200]
    assert (local / "config.json").read_bytes() == (tiny_preset / "config.json").read_bytes()


def test_wrong_bytes_fail_the_manifest_and_are_deleted(served):
    url, folder, state = served
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))  # same size, wrong content
    with pytest.raises(IntegrityError, match=r"model\.safetensors from http.*sha256"):
        resolve_preset(url)
    assert not (static.cache_folder(url) / "model.safetensors").exists()


def test_sharded_folder_without_manifest(static_server, sharded_preset):
    server, state = static_server
    shutil.copytree(sharded_preset, state.root / "sharded")
    local = resolve_preset(f"{server.url}/sharded")
    assert files_of(local) == files_of(sharded_preset)


def test_pickle_only_folder_is_refused(static_server, tiny_preset):
    server, state = static_server
    folder = state.root / "pickled"
    folder.mkdir()
    shutil.copy(tiny_preset / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(UnsafeFormatError, match="pytorch_model.bin"):
        resolve_preset(f"{server.url}/pickled/")
    assert not [p for m, p, _, _ in state.log if p.endswith("pytorch_model.bin") and m == "GET"]


def test_offline_uses_the_cache_and_says_what_is_missing(monkeypatch, served, tiny_preset):
    url, folder, state = served
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"missing config\.json.*python -m zoohub\.hub download"):
        resolve_preset(url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    local = resolve_preset(url)
    before = len(state.log)
    monkeypatch.setenv("ZOOHUB_OFFLINE", "1")
    assert resolve_preset(url) == local and len(state.log) == before


def test_unreachable_host_fails_fast(dead_url):
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"cannot reach .*missing config\.json"):
        resolve_preset(f"{dead_url}/models/x/")
    assert time.monotonic() - start < 3


def test_unreachable_host_falls_back_to_the_cache(tmp_path, tiny_preset):
    shutil.copytree(tiny_preset, tmp_path / "root" / "m")
    server, _ = start_static(tmp_path / "root")
    url = f"{server.url}/m/"
    local = resolve_preset(url)
    server.close()  # the host goes away: connections are refused
    start = time.monotonic()
    assert resolve_preset(url) == local
    assert time.monotonic() - start < 3
    assert files_of(local) == files_of(tiny_preset)
