"""kill -9 at random moments: while saving a preset over an existing one, publishing to the local hub,
downloading from an hf:// hub and writing fit checkpoints. Afterwards the old state is intact or the
new one complete, never a mix, and a later load never takes a partial file as complete.

Each victim is a subprocess that prints "ready" right before the operation; it is SIGKILLed after a
delay drawn (seeded, so runs repeat) from the operation's measured duration. The fit victims are
forked from one process that imported jax once (`Zygote`); the others are plain `python -c` runs on
the numpy backend.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from tests.reliability.harness import (
    KillTrials, Zygote, files_of, finish, leftovers, logits, make_preset, publish_to_hub, spawn,
    wait_for,
)
from zoohub.errors import OfflineError
from zoohub.hub import hf, integrity, local, path_handle  # noqa: F401 (huggingface_hub reads HF_HUB_OFFLINE at import: online)

TRIALS = 20
SHARD = 50_000  # the new version is saved in shards, the old one in one file: a mix could not hide


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions of a preset (different weights): the old one in one file, the new one in shards."""
    root = tmp_path_factory.mktemp("versions")
    old = make_preset(root / "old" / "preset", seed=1)
    new = make_preset(root / "new-source" / "preset", seed=2)
    from zoohub.backend import using
    import zoohub

    with using("numpy"):  # the new version exactly as the victims save it
        zoohub.TextClassifier.from_preset(new).save_to_preset(root / "new" / "preset", max_shard_bytes=SHARD)
    new = root / "new" / "preset"
    assert "model.safetensors" in files_of(old) and "model.safetensors.index.json" in files_of(new)
    return {"old": old, "new": new, "old_logits": logits(old), "new_logits": logits(new)}


def _without_dates(files: dict[str, bytes]) -> dict:
    out = dict(files)
    if "zoohub.json" in out:
        meta = json.loads(out["zoohub.json"])
        meta.pop("saved_at", None)
        out["zoohub.json"] = meta
    return out


def which_version(folder: Path, versions: dict) -> str:
    """"old" or "new" when `folder` holds exactly one of them (and loads to its outputs); else fails."""
    found = _without_dates(files_of(folder))
    for name in ("old", "new"):
        if found == _without_dates(files_of(versions[name])):
            integrity.check_manifest(folder)  # every listed file is there, with its size and sha256
            np.testing.assert_array_equal(logits(folder), versions[f"{name}_logits"])
            return name
    raise AssertionError(f"{folder} is neither version: {sorted(found)}")


def assert_tidied(target: Path) -> None:
    """A killed writer's temp folders go with the next write to `target`."""
    with mock.patch.object(local, "_FRESH_S", 0.0):  # its writer is known dead: no need to wait
        local._tidy(target)
    assert leftovers(target.parent, target.name) == []


def assert_all_tidied(folder: Path) -> None:
    """`assert_tidied` for every folder a killed writer wrote beside others in `folder`."""
    for entry in list(folder.iterdir()):
        match = re.fullmatch(r"\.(.+)\.(tmp|old)-[0-9a-f]{8}", entry.name)
        # folders only: a killed fit's pointer temp file (.latest.json.tmp-*) is the next checkpoint's to remove
        if match and entry.is_dir():
            assert_tidied(folder / match.group(1))


# -- save_to_preset over an existing preset -----------------------------------------------------

SAVE = """
import sys, zoohub
model = zoohub.TextClassifier.from_preset(sys.argv[1])
print("ready", flush=True)
model.save_to_preset(sys.argv[2], max_shard_bytes=int(sys.argv[3]))
print("done", flush=True)
"""


def test_kill_during_save_to_preset(versions, tmp_path):
    def fresh(i: int) -> Path:
        target = tmp_path / f"t{i}" / "preset"
        shutil.copytree(versions["old"], target)
        return target

    def check(i: int) -> str:
        target = tmp_path / f"t{i}" / "preset"
        found = which_version(target, versions)
        assert_tidied(target)
        return found

    run = KillTrials("save_to_preset over an existing preset", seed=101)
    run.run(TRIALS, lambda i: spawn(SAVE, versions["new"], fresh(i), SHARD), check)
    run.report()


# The worst moments, hit on purpose: the victim kills itself inside the write. (module, function,
# before or after the call, which call) -> the version found afterwards.
MOMENTS = {
    "after the first shard": (("zoohub.presets.weights", "_write_file", "after", 1), "old"),
    "before the swap": (("zoohub.hub.local", "_swap", "before", 1), "old"),
    "right after the swap": (("zoohub.hub.local", "_exchange", "after", 1), "new"),
    # Without renameat2 the swap's first os.rename moves the old version aside; killed there, the
    # target is missing until the next load puts it back.
    "between the two renames (no renameat2)": (("os", "rename", "after", 1), "old"),
}
SELF_KILL = """
import importlib, os, signal, sys, zoohub
from zoohub.hub import local
module_name, function, when, count = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
module = importlib.import_module(module_name)
real = getattr(module, function)
calls = []
if function == "rename":
    local._renameat2 = None  # the portable swap: target renamed aside, then the new one in

def wrapped(*args, **kwargs):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) >= count:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, function, wrapped)
model = zoohub.TextClassifier.from_preset(sys.argv[1])
print("ready", flush=True)
model.save_to_preset(sys.argv[2], max_shard_bytes=50_000)
"""


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_at_the_worst_moment_of_a_save(versions, tmp_path, moment):
    target = tmp_path / "preset"
    shutil.copytree(versions["old"], target)
    where, expected = MOMENTS[moment]
    if where[1] == "_exchange":
        probe = [tmp_path / "a", tmp_path / "b"]
        for folder in probe:
            folder.mkdir()
        if not local._exchange(*probe):
            pytest.skip("this filesystem cannot exchange two folders (renameat2); the fallback is tested")
    proc = spawn(SELF_KILL, versions["new"], target, *where)
    wait_for(proc)
    proc.communicate(timeout=60)
    assert proc.returncode == -9, f"the victim was not killed {moment}"
    if moment.startswith("between"):
        assert not target.exists(), "the kill did land between the renames"
        local.resolve(path_handle(str(target)))  # a later load puts the old version back
    assert which_version(target, versions) == expected
    assert_tidied(target)


# -- upload to the local hub ---------------------------------------------------------------------

UPLOAD = """
import sys, zoohub
print("ready", flush=True)
zoohub.upload_preset(sys.argv[1], sys.argv[2])
print("done", flush=True)
"""


def test_kill_during_local_hub_upload(versions, tmp_path, monkeypatch):
    handle = "local://me/tiny"
    published = {}
    for name in ("old", "new"):  # what each version looks like once published
        home = tmp_path / f"ref-{name}"
        finish(spawn(UPLOAD, handle, versions[name], env={"ZOOHUB_HOME": str(home)}))
        published[name] = home / "hub" / "me" / "tiny"
    assert files_of(published["old"]) != files_of(published["new"])

    def fresh(i: int) -> Path:
        home = tmp_path / f"home{i}"
        shutil.copytree(published["old"], home / "hub" / "me" / "tiny")
        return home

    def check(i: int) -> str:
        home = tmp_path / f"home{i}"
        target = home / "hub" / "me" / "tiny"
        found = files_of(target)
        outcome = next((name for name in ("old", "new") if found == files_of(published[name])), None)
        assert outcome, f"trial {i}: the local hub holds a mix: {sorted(found)}"
        monkeypatch.setenv("ZOOHUB_HOME", str(home))
        np.testing.assert_array_equal(logits(handle), versions[f"{outcome}_logits"])
        assert_tidied(target)
        return outcome

    run = KillTrials("upload_preset to local:// over an existing version", seed=202)
    run.run(TRIALS, lambda i: spawn(UPLOAD, handle, versions["new"], env={"ZOOHUB_HOME": str(fresh(i))}), check)
    run.report()


# -- hf:// download -----------------------------------------------------------------------------

DOWNLOAD = """
import sys
from zoohub.hub import hf  # huggingface_hub imported before "ready": the kills land in the download
from zoohub.presets.resolve import resolve_preset
print("ready", flush=True)
resolve_preset(sys.argv[1])
print("done", flush=True)
"""


def test_kill_during_hf_download(versions, hub_servers, isolated, monkeypatch):
    from zoohub.presets.resolve import resolve_preset

    publish_to_hub(hub_servers, "me/killed", versions["new"])
    expected = files_of(versions["new"])
    hub_servers.state.pace_s = 0.002  # bodies in 16 KB steps: kills land inside files too
    try:
        def check(i: int) -> str:
            monkeypatch.setenv("HF_HUB_CACHE", str(isolated / f"cache{i}"))
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            try:  # offline, a later load takes only what is complete and verified
                assert files_of(resolve_preset("hf://me/killed")) == expected
                outcome = "complete"
            except OfflineError:
                outcome = "incomplete (refused offline)"
            monkeypatch.delenv("HF_HUB_OFFLINE")
            assert files_of(resolve_preset("hf://me/killed")) == expected  # and online it completes
            return outcome

        run = KillTrials("hf:// download through the loopback hub", seed=303)
        run.run(TRIALS, lambda i: spawn(DOWNLOAD, "hf://me/killed", env={"HF_HUB_CACHE": str(isolated / f"cache{i}")}),
                check)
        run.report()
    finally:
        hub_servers.state.pace_s = 0.0


# -- fit checkpoints ----------------------------------------------------------------------------

FIT_IMPORTS = """
import numpy as np
import jax, optax
import zoohub
import zoohub.tasks.text_classifier, zoohub.tasks.training.loop, zoohub.tasks.training.checkpoint
"""
FIT = """
import sys
import numpy as np
import zoohub
rng = np.random.default_rng(0)
ids = rng.integers(5, 97, size=(16, 6)).astype(np.int32)
labels = rng.integers(0, 2, size=16)
model = zoohub.TextClassifier.from_preset(sys.argv[1])
said = []
def ready(event, logs):  # after the first compiled step: the kills land in the epochs and their checkpoints
    if not said:
        print("ready", flush=True)
        said.append(1)
model.fit({"input_ids": ids}, labels, epochs=int(sys.argv[3]), batch_size=8, learning_rate=1e-3, seed=3,
          checkpoint_dir=sys.argv[2], resume=sys.argv[4] == "resume", callbacks=[ready], verbose=False)
print("done", flush=True)
"""
EPOCHS = 8


def _checkpoint_state(folder: Path) -> dict:
    """What must be bit-identical to the undisturbed run: tensors, optimizer state, epoch and step."""
    state = json.loads((folder / "state.json").read_text())
    return {"optimizer": (folder / "optimizer.safetensors").read_bytes(),
            "trainable": (folder / "trainable.safetensors").read_bytes(),
            "epoch": state["epoch"], "step": state["step"]}


def test_kill_during_fit_checkpoints(versions, tmp_path):
    jax_env = {"ZOOHUB_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
               "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    # Victims forked from one process that imported jax once: each trial then costs about a second.
    zygote = Zygote(FIT_IMPORTS, tmp_path / "logs", env=jax_env)
    reference = tmp_path / "reference"  # undisturbed, and alone: it fills the compilation cache
    resumable = []

    def check(i: int) -> str:
        folder = tmp_path / f"run{i}"
        if not folder.is_dir():
            return "no checkpoint yet"
        # Every visible checkpoint folder is complete and equal to the undisturbed run's.
        for entry in sorted(p for p in folder.iterdir() if p.name.startswith("epoch-")):
            if entry.name.endswith(".state"):
                assert _checkpoint_state(entry) == _checkpoint_state(reference / entry.name), entry
            else:
                assert _without_dates(files_of(entry)) == _without_dates(files_of(reference / entry.name))
                integrity.check_manifest(entry)
        assert_all_tidied(folder)
        strays = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert all(name.startswith(".latest.json.tmp-") for name in strays), strays
        latest = folder / "latest.json"
        if not latest.is_file():
            return "no checkpoint yet"
        pointer = json.loads(latest.read_text())  # what resume reads: both folders there and complete
        assert (folder / pointer["preset"]).is_dir() and (folder / pointer["state"] / "state.json").is_file()
        np.testing.assert_array_equal(logits(folder / pointer["preset"]), logits(reference / pointer["preset"]))
        if pointer["epoch"] < EPOCHS:
            resumable.append(folder)
            return "checkpoint of an earlier epoch"
        return "last checkpoint"

    run = KillTrials("fit checkpoint writes (checkpoint_dir=)", seed=404)
    try:
        finish(zygote.launch(FIT, versions["old"], reference, EPOCHS, ""))
        run.run(TRIALS, lambda i: zygote.launch(FIT, versions["old"], tmp_path / f"run{i}", EPOCHS, ""), check)
        assert len([p for p in reference.iterdir() if p.name.startswith("epoch-")]) == 2 * EPOCHS
        run.report()
        if resumable:  # a killed run resumed to the end gives exactly the undisturbed run's weights
            last = resumable[-1]
            finish(zygote.launch(FIT, versions["old"], last, EPOCHS, "resume"))
            name = f"epoch-{EPOCHS:04d}"
            assert (last / name / "model.safetensors").read_bytes() == (reference / name / "model.safetensors").read_bytes()
    finally:
        zygote.close()
