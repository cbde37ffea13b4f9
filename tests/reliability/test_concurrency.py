"""Eight processes load the same preset into one empty cache at once: every one gets identical,
verified bytes, each file crosses the network once, and none corrupts another's download.

hf:// relies on huggingface_hub's per-file locks; https:// static hosts on zoohub's lock per cache
entry (zoohub/hub/static.py). The loopback servers count the requests per file.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter

import pytest

from tests.reliability.harness import (
    TOKENS, files_of, finish, logits, make_preset, publish_to_hub, spawn, wait_for,
)

PROCESSES = 8
LOAD = """
import hashlib, json, sys
import numpy as np
import zoohub
from zoohub.presets.resolve import resolve_preset
print("ready", flush=True)
sys.stdin.readline()  # the start signal: every process begins at once
folder = resolve_preset(sys.argv[1])
model = zoohub.TextClassifier.from_preset(folder)
tokens = np.array(json.loads(sys.argv[2]), np.int32)
digests = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(folder.rglob("*")) if p.is_file()}
print(json.dumps({"folder": str(folder), "digests": digests,
                  "logits": np.asarray(model.logits({"input_ids": tokens})).tolist()}), flush=True)
"""


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return make_preset(tmp_path_factory.mktemp("concurrency") / "preset", seed=7)


def load_at_once(handle: str) -> tuple[list[dict], float]:
    """Start the processes, let them all reach the start line, then release them together."""
    procs = [spawn(LOAD, handle, json.dumps(TOKENS.tolist())) for _ in range(PROCESSES)]
    for proc in procs:
        wait_for(proc)
    start = time.monotonic()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(finish(proc).strip().splitlines()[-1]) for proc in procs]
    return results, time.monotonic() - start


def assert_identical_and_verified(results: list[dict], preset) -> None:
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in files_of(preset).items()}
    reference = logits(preset).tolist()
    for result in results:
        visible = {k: v for k, v in result["digests"].items() if not k.startswith(".")}
        assert visible == expected, "a process read bytes that differ from the published preset"
        assert result["logits"] == reference


def test_eight_processes_share_one_hf_download(preset, hub_servers, isolated):
    publish_to_hub(hub_servers, "me/shared", preset)
    state = hub_servers.state
    before = len(state.log)
    state.pace_s = 0.01  # bodies in 16 KB steps: the downloads overlap
    try:
        results, seconds = load_at_once("hf://me/shared")
    finally:
        state.pace_s = 0.0
    assert_identical_and_verified(results, preset)
    assert len({r["folder"] for r in results}) == 1
    gets = Counter(path.rsplit("/", 1)[-1] for method, path, _ in state.log[before:]
                   if method == "GET" and ("/resolve/" in path or path.startswith("cdn:")))
    sha = hashlib.sha256((preset / "model.safetensors").read_bytes()).hexdigest()
    names = sorted(files_of(preset))
    fetched = {name: gets[sha if name.endswith(".safetensors") else name] for name in names}
    assert fetched == {name: 1 for name in names}, f"files fetched more than once: {fetched}"
    print(f"RELIABILITY | {PROCESSES} processes, one hf:// cache | 1 | each of {len(names)} files fetched once; "
          f"identical verified bytes in all {PROCESSES} | {seconds:.1f} s")


def test_eight_processes_share_one_static_download(preset, static_host, isolated):
    server, state = static_host
    shutil.copytree(preset, state.root / "shared")
    url = f"{server.url}/shared/"
    before = len(state.log)
    state.pace_s = 0.01
    try:
        results, seconds = load_at_once(url)
    finally:
        state.pace_s = 0.0
    assert_identical_and_verified(results, preset)
    assert len({r["folder"] for r in results}) == 1
    bodies = Counter(path.rsplit("/", 1)[-1] for method, path, _, status in state.log[before:]
                     if method == "GET" and status in (200, 206))
    names = sorted(files_of(preset))
    assert {name: bodies[name] for name in names} == {name: 1 for name in names}, bodies
    revalidated = sum(1 for m, p, _, status in state.log[before:] if status == 304)
    partials = [p for p in (isolated / "zoohub-home").rglob("*") if p.name.endswith((".incomplete", ".tmp"))]
    assert not partials, partials
    print(f"RELIABILITY | {PROCESSES} processes, one https:// static cache | 1 | each of {len(names)} files "
          f"fetched once ({revalidated} revalidations); identical verified bytes in all {PROCESSES} | {seconds:.1f} s")
