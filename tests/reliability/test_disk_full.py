"""A full disk while saving a preset over an existing one, and while downloading from a static host:
a zoohub.errors.DiskFullError naming the path, no partial file left behind, the previous preset untouched.

Two ways to fill the disk: RLIMIT_FSIZE in a child process (SIGXFSZ ignored, so writes past the limit
fail with EFBIG), and a real ENOSPC on a tiny tmpfs (needs mount permission: root in CI; skipped
where mounting is not permitted).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.harness import files_of, finish, leftovers, logits, make_preset, publish_to_hub, spawn
from zoohub.errors import DiskFullError, OfflineError
from zoohub.hub import hf, static  # noqa: F401 (huggingface_hub reads HF_HUB_OFFLINE at import: online)
from zoohub.presets.resolve import resolve_preset

LIMIT = 64 << 10  # below the weights (about 180 KB), above every small file

LIMITED = """
import json, resource, signal, sys
import zoohub
from zoohub.presets.resolve import resolve_preset
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
action, source, target, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = zoohub.TextClassifier.from_preset(source) if action == "save" else None
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    model.save_to_preset(target) if action == "save" else resolve_preset(source)
    print(json.dumps({"error": None}))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__module__}.{type(e).__name__}", "message": str(e)}))
"""


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk-full")
    return make_preset(root / "old" / "preset", seed=11), make_preset(root / "new" / "preset", seed=12)


@pytest.fixture(scope="module")
def big_versions(tmp_path_factory):
    """Presets with about 1.6 MB of weights: far more than a memory page (4 KB, or 64 KB on some
    machines), so the tmpfs sizes below leave room for every small file and never for the weights."""
    root = tmp_path_factory.mktemp("disk-full-big")
    return (make_preset(root / "old" / "preset", seed=13, intermediate_size=2048),
            make_preset(root / "new" / "preset", seed=14, intermediate_size=2048))


PAGE = os.sysconf("SC_PAGE_SIZE")


def on_disk(folder: Path) -> int:
    """Bytes a folder's files take on a tmpfs (whole pages)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in folder.rglob("*") if p.is_file())


def assert_clear(outcome: dict, path_part: str) -> str:
    assert outcome["error"] == "zoohub.errors.DiskFullError", outcome
    message = outcome["message"]
    assert path_part in message and "\n" not in message, message
    return message


def assert_untouched(target: Path, before: dict) -> None:
    assert files_of(target) == before, "the previous preset changed"
    assert leftovers(target.parent, target.name) == [], "a partial copy was left beside the preset"


def test_file_size_limit_while_saving_over_a_preset(versions, tmp_path):
    old, new = versions
    target = shutil.copytree(old, tmp_path / "preset")
    before = files_of(target)
    start = time.monotonic()
    outcome = json.loads(finish(spawn(LIMITED, "save", new, target, LIMIT)))
    message = assert_clear(outcome, str(target))
    assert "file size limit" in message
    assert_untouched(target, before)
    assert (logits(target) == logits(old)).all()
    print(f"RELIABILITY | disk full (RLIMIT_FSIZE) during save_to_preset over a preset | 1 | DiskFullError "
          f"naming the preset; old preset intact, no partial copy | {time.monotonic() - start:.1f} s")


def test_file_size_limit_while_downloading_from_a_static_host(versions, static_host, isolated, monkeypatch):
    server, state = static_host
    shutil.copytree(versions[0], state.root / "limited")
    url = f"{server.url}/limited/"
    start = time.monotonic()
    outcome = json.loads(finish(spawn(LIMITED, "download", url, "-", LIMIT)))
    assert_clear(outcome, str(static.cache_folder(url) / "model.safetensors"))
    home = isolated / "zoohub-home"
    assert not [p for p in home.rglob("*") if p.name.endswith((".incomplete", ".tmp"))], "a partial file is left"
    monkeypatch.setenv("ZOOHUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not fully cached"):  # never taken as complete
        resolve_preset(url)
    monkeypatch.delenv("ZOOHUB_OFFLINE")
    assert files_of(resolve_preset(url)) == files_of(versions[0])  # with room again, it completes
    print(f"RELIABILITY | disk full (RLIMIT_FSIZE) during a static-host download | 1 | DiskFullError naming "
          f"the cache file; no partial file, cache not taken as complete | {time.monotonic() - start:.1f} s")


def test_file_size_limit_while_downloading_from_an_hf_hub(versions, hub_servers, isolated, monkeypatch):
    publish_to_hub(hub_servers, "me/limited", versions[0])
    start = time.monotonic()
    outcome = json.loads(finish(spawn(LIMITED, "download", "hf://me/limited", "-", LIMIT)))
    assert_clear(outcome, "model.safetensors of hf://me/limited")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):  # huggingface_hub's .incomplete file is never taken as complete
        resolve_preset("hf://me/limited")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert files_of(resolve_preset("hf://me/limited")) == files_of(versions[0])
    print(f"RELIABILITY | disk full (RLIMIT_FSIZE) during an hf:// download | 1 | DiskFullError naming the "
          f"file and cache; cache not taken as complete | {time.monotonic() - start:.1f} s")


# -- a real ENOSPC on a tiny tmpfs ----------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A mount point for a tmpfs of a given size; skipped where mounting is not permitted."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        size = -(-size // PAGE) * PAGE
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                  capture_output=True, text=True, timeout=30)
        except OSError as e:
            pytest.skip(f"mount is not available here ({e}); the RLIMIT_FSIZE variants cover disk-full")
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); the RLIMIT_FSIZE "
                        "variants cover disk-full")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def test_no_space_left_while_saving_over_a_preset(big_versions, tiny_disk):
    import zoohub
    from zoohub.backend import using

    old, new = big_versions
    weights = (new / "model.safetensors").stat().st_size
    disk = tiny_disk(on_disk(old) + weights // 2)  # the old preset, and half the new weights beside it
    target = shutil.copytree(old, disk / "preset")
    before = files_of(target)
    start = time.monotonic()
    with using("numpy"):
        model = zoohub.TextClassifier.from_preset(new)
    with pytest.raises(DiskFullError, match="no space left") as info:
        model.save_to_preset(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert_untouched(target, before)
    assert (logits(target) == logits(old)).all()
    print(f"RELIABILITY | disk full (ENOSPC, tiny tmpfs) during save_to_preset over a preset | 1 | "
          f"DiskFullError naming the preset; old preset intact, no partial copy | {time.monotonic() - start:.1f} s")


def test_no_space_left_while_downloading_from_a_static_host(big_versions, static_host, isolated, tiny_disk,
                                                             monkeypatch):
    server, state = static_host
    shutil.copytree(big_versions[1], state.root / "no-space")
    url = f"{server.url}/no-space/"
    weights = (big_versions[1] / "model.safetensors").stat().st_size
    home = tiny_disk(16 * PAGE + weights // 2)  # the small files, cache state and records; half the weights
    monkeypatch.setenv("ZOOHUB_HOME", str(home))
    start = time.monotonic()
    with pytest.raises(DiskFullError, match="no space left") as info:
        resolve_preset(url)
    assert str(static.cache_folder(url) / "model.safetensors") in str(info.value)
    assert not [p for p in home.rglob("*") if p.name.endswith((".incomplete", ".tmp"))], "a partial file is left"
    monkeypatch.setenv("ZOOHUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not fully cached"):
        resolve_preset(url)
    print(f"RELIABILITY | disk full (ENOSPC, tiny tmpfs) during a static-host download | 1 | DiskFullError "
          f"naming the cache file; no partial file, cache not taken as complete | {time.monotonic() - start:.1f} s")
