"""Every file a preset names stays inside its folder and is a regular file, for loading and for upload.

Escapes: absolute paths, `..` segments, symlinks leading out, and FIFOs or sockets (never opened).
Allowed: symlinks inside the folder, and huggingface_hub's snapshot -> blobs/ links of the same repo.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.errors import UnsafePathError
from zoohub.hub import confine
from zoohub.hub.validate import validate_folder
from zoohub.presets.weights import read_weights, write_weights

from tests.reliability.tiny_presets import (  # noqa: F401 (fixtures)
    checkpoint, no_hang, own_zoohub_home, saved,
)

INDEX = "model.safetensors.index.json"


def _shard_index(folder: Path, shard: str) -> None:
    """Replace model.safetensors by an index whose weight_map sends every tensor to `shard`."""
    keys = list(read_weights(folder))
    (folder / "model.safetensors").unlink()
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {k: shard for k in keys}}))


def _outside_copy(folder: Path, name: str) -> Path:
    """A copy of the folder's `name` outside the folder: an escape would find valid content there."""
    out = folder.parent / "outside"
    out.mkdir(exist_ok=True)
    return Path(shutil.copy(folder / name, out / Path(name).name))


def _sentence_transformers(folder: Path, pooling_path: str = "1_Pooling") -> None:
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": pooling_path, "type": "sentence_transformers.models.Pooling"}]))
    if ".." not in pooling_path and not pooling_path.startswith("/"):
        (folder / pooling_path).mkdir(parents=True, exist_ok=True)
        (folder / pooling_path / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))


# ---- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("/etc/passwd", "absolute"), ("C:\\Windows\\win.ini", "absolute"), ("../model.safetensors", "'..'"),
    ("sub/../../x.json", "'..'"), ("..\\x.json", "backslash"), ("", "relative path"), (None, "relative path"),
    (7, "relative path"),
])
def test_names_that_could_leave_the_folder_are_refused(tmp_path, name, reason):
    with pytest.raises(UnsafePathError, match=reason):
        confine.resolve(tmp_path, name)


def test_plain_and_nested_names_resolve(checkpoint):
    _sentence_transformers(checkpoint)
    assert confine.resolve(checkpoint, "config.json") == Path(os.path.realpath(checkpoint / "config.json"))
    assert confine.read_bytes(checkpoint, "1_Pooling/config.json") == b'{"pooling_mode_cls_token": true}'
    assert confine.resolve(checkpoint, "absent.json") is None


# ---- loading -----------------------------------------------------------------------------------

def test_shard_index_with_an_absolute_path_is_refused(checkpoint):
    outside = _outside_copy(checkpoint, "model.safetensors")
    _shard_index(checkpoint, str(outside))
    with pytest.raises(UnsafePathError, match=rf"{INDEX} names the file '{outside}', an absolute path"):
        zoohub.Backbone.from_preset(checkpoint)


def test_shard_index_with_dotdot_is_refused(checkpoint):
    _outside_copy(checkpoint, "model.safetensors")
    _shard_index(checkpoint, "../outside/model.safetensors")
    with pytest.raises(UnsafePathError, match=r"'\.\./outside/model\.safetensors', which has a '\.\.' segment"):
        zoohub.Backbone.from_preset(checkpoint)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"])
def test_symlink_leading_out_is_refused(checkpoint, name):
    outside = _outside_copy(checkpoint, name)
    (checkpoint / name).unlink()
    (checkpoint / name).symlink_to(outside)
    with pytest.raises(UnsafePathError, match=rf"{name} is a symlink to {outside}, outside the preset folder"):
        zoohub.Backbone.from_preset(checkpoint)


def test_shard_symlinked_out_is_refused(checkpoint):
    outside = _outside_copy(checkpoint, "model.safetensors")
    _shard_index(checkpoint, "model-00001-of-00001.safetensors")
    (checkpoint / "model-00001-of-00001.safetensors").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="model-00001-of-00001.safetensors is a symlink"):
        zoohub.Backbone.from_preset(checkpoint)


def test_pooling_folder_symlinked_out_is_refused(checkpoint):
    _sentence_transformers(checkpoint)
    shutil.move(checkpoint / "1_Pooling", checkpoint.parent / "elsewhere")
    (checkpoint / "1_Pooling").symlink_to(checkpoint.parent / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match=r"1_Pooling/config\.json is a symlink to .*elsewhere/config\.json"):
        zoohub.TextEmbedder.from_preset(checkpoint)


@pytest.mark.parametrize("path, reason", [("../1_Pooling", "'..'"), ("/tmp/1_Pooling", "absolute")])
def test_module_path_leaving_the_folder_is_refused(checkpoint, path, reason):
    _sentence_transformers(checkpoint, path)
    with pytest.raises(UnsafePathError, match=rf"modules\.json names the file .*{reason}"):
        zoohub.TextEmbedder.from_preset(checkpoint)


def test_module_path_inside_the_folder_is_followed(checkpoint):
    _sentence_transformers(checkpoint, "3_MyPooling")
    embedder = zoohub.TextEmbedder.from_preset(checkpoint)
    assert embedder.pooling == "cls"  # read from 3_MyPooling/config.json, not the default mean
    assert "3_MyPooling/config.json" in embedder.aux_files


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
def test_fifo_is_refused_without_being_opened(checkpoint, name):
    (checkpoint / name).unlink()
    os.mkfifo(checkpoint / name)
    with no_hang(), pytest.raises(UnsafePathError, match=rf"{name} is a FIFO \(named pipe\), not a regular file"):
        zoohub.Backbone.from_preset(checkpoint)


def test_fifo_as_a_shard_or_pooling_config_is_refused(checkpoint, tmp_path):
    other = Path(shutil.copytree(checkpoint, tmp_path / "other"))
    _shard_index(checkpoint, "model-00001-of-00001.safetensors")
    os.mkfifo(checkpoint / "model-00001-of-00001.safetensors")
    with no_hang(), pytest.raises(UnsafePathError, match="model-00001-of-00001.safetensors is a FIFO"):
        zoohub.Backbone.from_preset(checkpoint)
    _sentence_transformers(other)
    (other / "1_Pooling" / "config.json").unlink()
    os.mkfifo(other / "1_Pooling" / "config.json")
    with no_hang(), pytest.raises(UnsafePathError, match=r"1_Pooling/config\.json is a FIFO"):
        zoohub.TextEmbedder.from_preset(other)


def test_socket_is_refused(checkpoint, monkeypatch):
    (checkpoint / "tokenizer.json").unlink()
    monkeypatch.chdir(checkpoint)  # a short relative name: socket paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("tokenizer.json")
        with no_hang(), pytest.raises(UnsafePathError, match="tokenizer.json is a socket"):
            zoohub.Backbone.from_preset(checkpoint)


def test_device_is_refused(checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    try:  # /dev/zero's numbers: opening and reading it would never end
        os.mknod(checkpoint / "tokenizer.json", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a device node here ({e})")
    with no_hang(), pytest.raises(UnsafePathError, match="tokenizer.json is a character device"):
        zoohub.Backbone.from_preset(checkpoint)


def test_manifest_keys_leaving_the_folder_are_refused(saved):
    meta = json.loads((saved / "zoohub.json").read_text())
    meta["files"]["../outside.txt"] = {"size": 1, "sha256": "0" * 64}
    (saved / "zoohub.json").write_text(json.dumps(meta))
    with pytest.raises(UnsafePathError, match=r"zoohub\.json names the file '\.\./outside\.txt'"):
        zoohub.Backbone.from_preset(saved)


def test_symlinks_inside_the_folder_are_allowed(checkpoint):
    (checkpoint / "weights").mkdir()
    shutil.move(checkpoint / "model.safetensors", checkpoint / "weights" / "model.safetensors")
    (checkpoint / "model.safetensors").symlink_to("weights/model.safetensors")
    assert zoohub.Backbone.from_preset(checkpoint).predict(["the zoo"]).shape == (1, 4, 6)


# ---- the huggingface_hub cache: snapshot links into the same repo's blobs/ ------------------------

def _hf_cache(checkpoint: Path, cache: Path, repo: str = "models--me--tiny") -> Path:
    """The checkpoint laid out as huggingface_hub caches it: blobs named by hash, snapshot links to them."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / repo / "snapshots" / commit
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        blob = cache / repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, blob)
        link = snapshot / path.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_hf_cache_snapshot_links_into_its_blobs_are_allowed(checkpoint, tmp_path):
    _sentence_transformers(checkpoint)
    snapshot = _hf_cache(checkpoint, tmp_path / "hf-cache")
    assert os.readlink(snapshot / "1_Pooling" / "config.json").startswith("../../../blobs/")
    embedder = zoohub.TextEmbedder.from_preset(snapshot)
    assert embedder.pooling == "cls" and embedder.predict(["the zoo hub"]).shape == (1, 6)
    expected = zoohub.TextEmbedder.from_preset(checkpoint).predict(["the zoo hub"])
    np.testing.assert_array_equal(embedder.predict(["the zoo hub"]), expected)
    assert validate_folder(snapshot)  # and a cached snapshot may be uploaded


@pytest.mark.parametrize("target", ["other repo's blobs", "repo's refs"])
def test_hf_cache_links_elsewhere_are_refused(checkpoint, tmp_path, target):
    snapshot = _hf_cache(checkpoint, tmp_path / "hf-cache")
    if target == "other repo's blobs":
        other = _hf_cache(checkpoint, tmp_path / "hf-cache", "models--someone--else")
        blob = Path(os.path.realpath(other / "config.json"))
    else:
        blob = tmp_path / "hf-cache" / "models--me--tiny" / "refs" / "main"
        blob.parent.mkdir()
        shutil.copy(checkpoint / "config.json", blob)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(os.path.relpath(blob, snapshot))
    with pytest.raises(UnsafePathError, match="config.json is a symlink to .*outside the preset folder"):
        zoohub.Backbone.from_preset(snapshot)


# ---- upload validation ---------------------------------------------------------------------------

def _symlink_out(folder):
    (folder / "notes.txt").symlink_to(_outside_copy(folder, "config.json"))
    return "notes.txt is a symlink to .*outside the preset folder"


def _folder_symlink_out(folder):
    (folder.parent / "outside-dir").mkdir()
    (folder.parent / "outside-dir" / "secret.txt").write_text("secret")
    (folder / "extra").symlink_to(folder.parent / "outside-dir", target_is_directory=True)
    return "extra is a symlink to .*outside-dir, outside the preset folder"


def _fifo(folder):
    os.mkfifo(folder / "stream.txt")
    return r"stream\.txt is a FIFO \(named pipe\)"


def _fifo_weights(folder):
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    return r"model\.safetensors is a FIFO"


def _absolute_shard(folder):
    _shard_index(folder, str(_outside_copy(folder, "model.safetensors")))
    return "an absolute path"


def _dotdot_shard(folder):
    _outside_copy(folder, "model.safetensors")
    _shard_index(folder, "../outside/model.safetensors")
    return "'..' segment"


def _dotdot_module(folder):
    _sentence_transformers(folder, "../pooling")
    return r"modules\.json names the file '\.\./pooling'"


def _dotdot_manifest_key(folder):
    (folder / "zoohub.json").write_text(json.dumps({"files": {"../outside/config.json": {"size": 1}}}))
    return r"zoohub\.json names the file '\.\./outside/config\.json'"


@pytest.mark.parametrize("damage", [_symlink_out, _folder_symlink_out, _fifo, _fifo_weights, _absolute_shard,
                                    _dotdot_shard, _dotdot_module, _dotdot_manifest_key])
def test_upload_validation_refuses_escapes(checkpoint, tmp_path, damage):
    words = damage(checkpoint)
    with no_hang(), pytest.raises(UnsafePathError, match=words):
        validate_folder(checkpoint)
    target = tmp_path / "hub" / "me" / "tiny"
    with no_hang(), pytest.raises(UnsafePathError, match=words):
        zoohub.upload_preset(f"file://{target}", checkpoint)
    assert not target.exists(), "nothing was published"


def test_upload_copies_content_of_links_inside_the_folder(checkpoint, tmp_path):
    (checkpoint / "vocab-notes.txt").symlink_to("tokenizer_config.json")
    target = tmp_path / "hub" / "me" / "tiny"
    zoohub.upload_preset(f"file://{target}", checkpoint)
    assert not (target / "vocab-notes.txt").is_symlink()
    assert (target / "vocab-notes.txt").read_bytes() == (checkpoint / "tokenizer_config.json").read_bytes()


def test_written_weights_are_regular_files_in_the_folder(tmp_path):
    names = write_weights({"a": np.ones(3, np.float32), "b": np.zeros(5, np.float32)}, tmp_path, max_shard_bytes=12)
    assert all(confine.resolve(tmp_path, n) is not None for n in names)
