"""A saved preset that changed on disk is refused by name; unchanged folders load again without hashing;
files zoohub writes get the usual permissions (0o644 under umask 022), so a shared hub is readable."""
from __future__ import annotations

import json
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.errors import CorruptFileError, MissingFileError
from zoohub.hub import integrity
from zoohub.hub.validate import validate_folder
from zoohub.presets.weights import write_weights

from tests.reliability.tiny_presets import (  # noqa: F401 (fixtures)
    own_zoohub_home, saved, write_checkpoint,
)


def _flip_byte(path: Path) -> None:
    """Change one byte in the middle, keeping the size: only a checksum can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The names of the files integrity.compute hashes, in order."""
    names: list[str] = []
    original = integrity.compute

    def counting(path, **kwargs):
        names.append(Path(path).name)
        return original(path, **kwargs)

    monkeypatch.setattr(integrity, "compute", counting)
    return names


@contextmanager
def _umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}


# ---- corruption is refused by name -------------------------------------------------------------

@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_flipped_byte_is_refused_by_name(saved, name):
    _flip_byte(saved / name)
    with pytest.raises(CorruptFileError, match=rf"{name} does not match zoohub\.json: its sha256 is [0-9a-f]{{64}}"):
        zoohub.Backbone.from_preset(saved)


def test_corruption_after_a_verified_load_is_caught(saved):
    model = zoohub.Backbone.from_preset(saved)  # verifies and records every file
    assert integrity.is_recorded(saved / "model.safetensors")
    before = (saved / "model.safetensors").stat().st_mtime_ns
    _flip_byte(saved / "model.safetensors")
    assert (saved / "model.safetensors").stat().st_mtime_ns != before, "the write changed the mtime"
    with pytest.raises(CorruptFileError, match=r"model\.safetensors does not match zoohub\.json: its sha256"):
        zoohub.Backbone.from_preset(saved)
    assert model.predict(["the zoo"]).shape == (1, 4, 6)


def test_truncated_file_is_refused_by_size_without_hashing(saved, hashed):
    path = saved / "tokenizer.json"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match=rf"tokenizer\.json does not match zoohub\.json: it has {size - 7} "
                                               rf"bytes, the manifest says {size}"):
        zoohub.Backbone.from_preset(saved)
    assert "tokenizer.json" not in hashed


def test_listed_file_that_is_gone_is_reported(saved):
    (saved / "tokenizer_config.json").unlink()
    with pytest.raises(MissingFileError, match=r"tokenizer_config\.json is listed in zoohub\.json but missing"):
        zoohub.Backbone.from_preset(saved)


def test_upload_refuses_a_corrupted_preset(saved, tmp_path):
    _flip_byte(saved / "model.safetensors")
    with pytest.raises(CorruptFileError, match=r"model\.safetensors does not match zoohub\.json"):
        zoohub.upload_preset(f"file://{tmp_path / 'hub' / 'tiny'}", saved)
    assert not (tmp_path / "hub").exists()


# ---- unchanged folders are not hashed again ------------------------------------------------------

def test_second_load_of_an_unchanged_folder_does_not_rehash(saved, hashed):
    listed = set(json.loads((saved / "zoohub.json").read_text())["files"])
    zoohub.Backbone.from_preset(saved)
    assert set(hashed) == listed and len(hashed) == len(listed), "the first load hashes each file once"
    hashed.clear()
    zoohub.Backbone.from_preset(saved)
    zoohub.TextEmbedder.from_preset(saved)
    validate_folder(saved)  # the upload check uses the same records
    assert hashed == []
    # A changed mtime (same content) means "not verified since": that file, and only it, is hashed again.
    stamp = (saved / "config.json").stat()
    os.utime(saved / "config.json", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    zoohub.Backbone.from_preset(saved)
    assert hashed == ["config.json"]


def test_a_copy_is_verified_once_in_its_new_place(saved, tmp_path, hashed):
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    zoohub.Backbone.from_preset(saved)
    hashed.clear()
    zoohub.Backbone.from_preset(copy)  # records are per path: the copy's bytes are checked themselves
    assert "model.safetensors" in hashed
    hashed.clear()
    zoohub.Backbone.from_preset(copy)
    assert hashed == []


# ---- permissions ---------------------------------------------------------------------------------

def test_saved_preset_is_readable_by_others_under_umask_022(tmp_path):
    model = zoohub.Backbone.from_preset(write_checkpoint(tmp_path / "raw"))
    with _umask(0o022):
        out = model.save_to_preset(tmp_path / "saved")
        sharded = model.save_to_preset(tmp_path / "sharded", max_shard_bytes=200)
    for folder in (out, sharded):
        modes = _modes(folder)
        assert any(n.endswith(".safetensors") for n in modes)
        assert modes == {n: 0o644 for n in modes}, modes
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_written_weights_follow_the_umask(tmp_path):
    tensors = {"a": np.ones(3, np.float32), "b": np.zeros(5, np.float32)}
    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        folder = tmp_path / f"umask-{mask:03o}"
        with _umask(mask):
            (folder / "shards").mkdir(parents=True)
            single = write_weights(tensors, folder)
            shards = write_weights(tensors, folder / "shards", max_shard_bytes=12)
        assert single == ["model.safetensors"] and len(shards) == 3  # two shards and the index
        paths = [folder / n for n in single] + [folder / "shards" / n for n in shards]
        modes = [stat.S_IMODE(p.stat().st_mode) for p in paths]
        assert modes == [mode] * 4


def test_publishing_gives_private_source_files_the_usual_mode(saved, tmp_path):
    os.chmod(saved / "model.safetensors", 0o600)  # as zoohub wrote it before, or a private working copy
    target = tmp_path / "shared-hub" / "me" / "tiny"
    with _umask(0o022):
        zoohub.upload_preset(f"file://{target}", saved)
    assert set(_modes(target).values()) == {0o644}
