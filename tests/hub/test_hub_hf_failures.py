"""hf:// downloads when things go wrong: corrupt bytes, dropped connections, auth, 404s, no network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants

import zoohub
from conftest import READ_TOKEN, WRITE_TOKEN, files_of
from hubserver import Blob
from zoohub.errors import (
    AuthError, HubUnreachableError, IntegrityError, MissingFileError, OfflineError, RepoNotFoundError,
    RevisionNotFoundError, UnsafeFormatError,
)
from zoohub.hub import integrity
from zoohub.presets.resolve import resolve_preset


@pytest.fixture(scope="module")
def published(hub, tiny_preset):
    """hf://me/published: the tiny preset, uploaded once with the real client."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", hub.url)
        mp.setenv("HF_TOKEN", WRITE_TOKEN)
        zoohub.upload_preset("hf://me/published", tiny_preset)
    return "me/published"


def weights_oid(hub, repo="me/published") -> str:
    r = hub.state.repos[repo]
    return r.commits[r.refs["main"]]["model.safetensors"].sha256


def test_wrong_bytes_are_detected_named_and_evicted(hub, published, tiny_preset):
    oid = weights_oid(hub)
    hub.state.corrupt.add(oid)
    try:
        with pytest.raises(IntegrityError, match=r"model\.safetensors .*sha256") as info:
            resolve_preset(f"hf://{published}")
        assert oid in str(info.value)
    finally:
        hub.state.corrupt.discard(oid)
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert not list(cache.rglob(oid)), "the corrupt blob must be deleted"
    folder = resolve_preset(f"hf://{published}")  # and the next load fetches good bytes
    assert (folder / "model.safetensors").read_bytes() == (tiny_preset / "model.safetensors").read_bytes()


def test_corrupt_regular_file_is_caught_by_git_oid(hub, published):
    r = hub.state.repos[published]
    oid = r.commits[r.refs["main"]]["config.json"].oid
    hub.state.corrupt.add(oid)
    try:
        with pytest.raises(IntegrityError, match=r"config\.json .*git sha1"):
            resolve_preset(f"hf://{published}")
    finally:
        hub.state.corrupt.discard(oid)


def test_manifest_mismatch_is_detected(monkeypatch, hub, preset_copy):
    """A repo whose zoohub.json disagrees with a file it ships (uploaded around zoohub's validation)."""
    (preset_copy / "tokenizer_config.json").write_text('{"tampered": true}')
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN)
    api.create_repo("me/stale-manifest")
    api.upload_folder(repo_id="me/stale-manifest", folder_path=preset_copy)
    with pytest.raises(IntegrityError, match=r"tokenizer_config\.json .*zoohub\.json manifest"):
        resolve_preset("hf://me/stale-manifest")


def test_dropped_connection_is_retried(hub, published, tiny_preset):
    oid = weights_oid(hub)
    hub.state.drop_once.add(oid)
    before = len(hub.requests(f"cdn:/blobs/{oid}"))
    folder = resolve_preset(f"hf://{published}")
    assert oid not in hub.state.drop_once, "the drop switch was used"
    assert (folder / "model.safetensors").read_bytes() == (tiny_preset / "model.safetensors").read_bytes()
    # huggingface_hub retried (it resumes with Range once a 10 MB chunk has arrived; this file is smaller)
    gets = [h for m, _, h in hub.requests(f"cdn:/blobs/{oid}")[before:] if m == "GET"]
    assert len(gets) == 2


def test_verified_files_are_not_rehashed(monkeypatch, published):
    folder = resolve_preset(f"hf://{published}")
    assert integrity.is_recorded(folder / "model.safetensors")

    def no_hashing(path):
        raise AssertionError(f"{path} re-hashed")
    monkeypatch.setattr(integrity, "compute", no_hashing)
    assert resolve_preset(f"hf://{published}") == folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_preset(f"hf://{published}") == folder


def test_pinned_commit_in_cache_needs_no_network(hub, published):
    r = hub.state.repos[published]
    commit = r.refs["main"]
    folder = resolve_preset(f"hf://{published}@{commit}")
    before = len(hub.state.log)
    assert resolve_preset(f"hf://{published}@{commit}") == folder
    assert len(hub.state.log) == before
    (folder / "tokenizer.json").unlink()  # incomplete: goes back to the hub
    assert (resolve_preset(f"hf://{published}@{commit}") / "tokenizer.json").is_file()
    assert len(hub.state.log) > before


def test_gated_repo(monkeypatch, hub, published):
    hub.state.repos["me/gated"] = hub.state.repos[published].__class__(
        gated=True, commits=hub.state.repos[published].commits, refs=dict(hub.state.repos[published].refs))
    with pytest.raises(AuthError, match="accept its terms") as info:
        resolve_preset("hf://me/gated")
    assert "HF_TOKEN" in str(info.value)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(AuthError, match="accept its terms") as info:
        resolve_preset("hf://me/gated")
    assert READ_TOKEN not in str(info.value) and READ_TOKEN not in repr(info.value.__cause__)
    hub.state.accepted.add(("me/gated", READ_TOKEN))
    assert (resolve_preset("hf://me/gated") / "config.json").is_file()


def test_private_repo_and_bad_token(monkeypatch, hub, published):
    hub.state.repos["me/private"] = hub.state.repos[published].__class__(
        private=True, commits=hub.state.repos[published].commits, refs=dict(hub.state.repos[published].refs))
    with pytest.raises(RepoNotFoundError, match="private.*HF_TOKEN"):
        resolve_preset("hf://me/private")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_123")
    with pytest.raises(AuthError, match="HF_TOKEN") as info:
        resolve_preset("hf://me/private")
    assert "hf_not_a_real_token_123" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert (resolve_preset("hf://me/private") / "config.json").is_file()


def test_404s_are_distinct(hub, published):
    with pytest.raises(RepoNotFoundError, match="'me/nope' not found"):
        resolve_preset("hf://me/nope")
    with pytest.raises(RevisionNotFoundError, match="'v9' not found"):
        resolve_preset(f"hf://{published}@v9")
    r = hub.state.repos[published]
    files = {k: v for k, v in r.commits[r.refs["main"]].items() if k != "model.safetensors"}
    hub.state.repos["me/no-weights"] = r.__class__(commits={"c" * 40: files}, refs={"main": "c" * 40})
    with pytest.raises(MissingFileError, match="no weights"):
        resolve_preset("hf://me/no-weights")


def test_pickle_only_repo_is_refused_without_downloading(hub, published):
    r = hub.state.repos[published]
    files = {k: v for k, v in r.commits[r.refs["main"]].items() if k != "model.safetensors"}
    files["pytorch_model.bin"] = Blob(b"\x80\x04pickle", True)
    hub.state.repos["me/pickled"] = r.__class__(commits={"d" * 40: files}, refs={"main": "d" * 40})
    with pytest.raises(UnsafeFormatError, match="pytorch_model.bin.*safetensors"):
        resolve_preset("hf://me/pickled")
    assert not hub.requests("me/pickled/resolve/" + "d" * 40 + "/pytorch_model.bin")


def test_unreachable_endpoint_fails_fast(monkeypatch, dead_url):
    monkeypatch.setenv("HF_ENDPOINT", dead_url)
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="cannot reach"):
        resolve_preset("hf://me/published")
    assert time.monotonic() - start < 5


def test_unreachable_endpoint_falls_back_to_cache(monkeypatch, published, dead_url):
    folder = resolve_preset(f"hf://{published}")
    monkeypatch.setenv("HF_ENDPOINT", dead_url)
    assert resolve_preset(f"hf://{published}") == folder


def _load_in_subprocess(handle: str, dead_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": dead_url}
    code = ("import sys; from zoohub.presets.resolve import resolve_preset; "
            "print(resolve_preset(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, handle], env=env, capture_output=True, text=True,
                          timeout=60)


def test_offline_loads_from_cache_in_a_fresh_process(published, tiny_preset, dead_url):
    folder = resolve_preset(f"hf://{published}")
    result = _load_in_subprocess(f"hf://{published}", dead_url)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == folder
    assert files_of(folder) == files_of(tiny_preset)


def test_offline_without_cache_lists_missing_files_and_the_fetch_command(monkeypatch, published, dead_url):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="config.json.*model.safetensors") as info:
        resolve_preset(f"hf://{published}@v2")
    assert "python -m zoohub.hub download 'hf://me/published@v2'" in str(info.value)
    # partly cached: the message names exactly what is missing
    monkeypatch.delenv("HF_HUB_OFFLINE")
    folder = resolve_preset(f"hf://{published}")
    (folder / "tokenizer.json").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"missing tokenizer\.json\. Fetch"):
        resolve_preset(f"hf://{published}")


def test_download_command(published, tmp_path):
    result = subprocess.run([sys.executable, "-m", "zoohub.hub", "download", f"hf://{published}"],
                            env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads((Path(result.stdout.strip()) / "config.json").read_text())["model_type"] == "bert"
