"""upload_preset to local targets (file://, paths, local://), validation before anything is sent, handles."""
from __future__ import annotations

import json
import os
import struct

import pytest
import yaml

import zoohub
from conftest import WRITE_TOKEN, files_of, write_zoohub_json
from zoohub.errors import (
    AuthError, CorruptFileError, InputError, MissingFileError, PresetNotFoundError, UnsafeFormatError,
)
from zoohub.hub import parse_handle
from zoohub.presets.resolve import resolve_preset


def test_upload_to_local_hub_then_load(preset_copy):
    url = zoohub.upload_preset("local://me/tiny", preset_copy)
    target = parse_handle("local://me/tiny").path
    assert url == target.as_uri() and target.parent.parent.name == "hub"
    assert resolve_preset("local://me/tiny") == target
    published = files_of(target)
    assert {k: v for k, v in published.items() if k != "README.md"} == files_of(preset_copy)
    front = yaml.safe_load(published["README.md"].decode().split("---\n")[1])
    assert front["library_name"] == "zoohub" and front["pipeline_tag"] == "text-classification"
    assert "zoohub.TextClassifier.from_preset('local://me/tiny')" in published["README.md"].decode()


def test_local_upload_is_atomic_and_unchanged_content_is_a_noop(preset_copy, tmp_path):
    target = tmp_path / "srv" / "me" / "tiny"
    zoohub.upload_preset(f"file://{target}", preset_copy)
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    inode = target.stat().st_ino
    zoohub.upload_preset(str(target), preset_copy)  # a plain path works the same
    assert target.stat().st_ino == inode and (target / "model.safetensors").stat().st_mtime_ns == stamp
    (preset_copy / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    write_zoohub_json(preset_copy, task="text_classifier")
    zoohub.upload_preset(f"file://{target}", preset_copy)
    assert target.stat().st_ino != inode, "a new version is swapped in whole, not edited in place"
    assert (target / "tokenizer_config.json").read_text() == '{"do_lower_case": false}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"], "no temp folders left behind"


def test_failed_local_upload_leaves_the_previous_version(preset_copy, tmp_path):
    target = tmp_path / "srv" / "tiny"
    zoohub.upload_preset(str(target), preset_copy)
    before = files_of(target)
    (preset_copy / "model.safetensors").write_bytes((preset_copy / "model.safetensors").read_bytes()[:-10])
    with pytest.raises(CorruptFileError):
        zoohub.upload_preset(str(target), preset_copy)
    assert files_of(target) == before


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-4])
    (folder / "zoohub.json").unlink()


def _bad_header(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10 ** 9) + data[8:])
    (folder / "zoohub.json").unlink()


def _no_model_type(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "zoohub.json").unlink()


def _bad_tokenizer(folder):
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    (folder / "zoohub.json").unlink()


def _edited_after_save(folder):
    (folder / "tokenizer_config.json").write_text("{}")


def _pickle(folder):
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")


def _no_weights(folder):
    (folder / "model.safetensors").unlink()
    (folder / "zoohub.json").unlink()


@pytest.mark.parametrize("damage, error, words", [
    (_truncate, CorruptFileError, "model.safetensors holds"),
    (_bad_header, CorruptFileError, "header length"),
    (_no_model_type, CorruptFileError, "model_type"),
    (_bad_tokenizer, CorruptFileError, "tokenizer.json does not load"),
    (_edited_after_save, CorruptFileError, "tokenizer_config.json does not match"),
    (_pickle, UnsafeFormatError, "pytorch_model.bin"),
    (_no_weights, MissingFileError, "no weights"),
])
def test_validation_fails_before_anything_is_sent(monkeypatch, hub, preset_copy, damage, error, words):
    damage(preset_copy)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    before = len(hub.state.log)
    with pytest.raises(error, match=words.replace(".", r"\.")):
        zoohub.upload_preset("hf://me/never-created", preset_copy)
    assert len(hub.state.log) == before and "me/never-created" not in hub.state.repos


def test_shard_index_must_match_the_shards(monkeypatch, sharded_preset, tmp_path):
    import shutil
    folder = shutil.copytree(sharded_preset, tmp_path / "sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name + ".extra"] = index["weight_map"][name]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptFileError, match="disagree"):
        zoohub.upload_preset(str(tmp_path / "out"), folder)


def test_hf_upload_needs_a_token(hub, preset_copy):
    with pytest.raises(AuthError, match="HF_TOKEN"):
        zoohub.upload_preset("hf://me/no-token", preset_copy)


def test_read_only_token_cannot_upload(monkeypatch, hub, preset_copy):
    monkeypatch.setenv("HF_TOKEN", "hf_read_token")
    with pytest.raises(AuthError) as info:
        zoohub.upload_preset("hf://me/read-only", preset_copy)
    assert "hf_read_token" not in str(info.value)


def test_static_hosts_are_not_upload_targets(preset_copy):
    with pytest.raises(InputError, match="static web host"):
        zoohub.upload_preset("https://example.org/models/x/", preset_copy)


def test_handles_and_names(tmp_path, preset_copy):
    assert resolve_preset(preset_copy) == preset_copy
    assert resolve_preset(f"file://{preset_copy}") == preset_copy
    with pytest.raises(PresetNotFoundError, match=r"use 'hf://someone/some-model'"):
        resolve_preset("someone/some-model")
    with pytest.raises(PresetNotFoundError, match="did you mean 'bert_base_en_uncased'"):
        resolve_preset("bert_base_en_uncase")
    zoohub.upload_preset("local://me/tiny-one", preset_copy)
    with pytest.raises(PresetNotFoundError, match="did you mean 'me/tiny-one'"):
        resolve_preset("local://me/tiny-on")
    with pytest.raises(PresetNotFoundError, match="hf://owner/repo"):
        resolve_preset("hf://not a repo")
    with pytest.raises(InputError, match="no revisions"):
        resolve_preset("https://example.org/x/", revision="v1")
    h = parse_handle("hf://o/r@refs/pr/3", revision=None)
    assert (h.location, h.revision) == ("o/r", "refs/pr/3")
    assert parse_handle("hf://o/r@v1", revision="main").revision == "main"


def test_local_folder_with_only_pickles_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeFormatError, match="Convert the checkpoint to safetensors"):
        resolve_preset(folder)


def test_registry_name_resolves_through_its_pinned_handle(monkeypatch, hub, tiny_preset):
    """A registry row's handle goes through the hub client (here the stand-in serves the repo)."""
    from zoohub.presets import registry

    row = registry.get_preset("bert_base_en_uncased")
    repo = row.handle[len("hf://"):]
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    url = zoohub.upload_preset(f"hf://{repo}", tiny_preset)
    monkeypatch.delenv("HF_TOKEN")
    commit = url.rsplit("/", 1)[1]
    if row.revision is None:
        assert resolve_preset("bert_base_en_uncased").name == commit
    assert resolve_preset("bert_base_en_uncased", revision=commit).name == commit
    assert os.path.basename(resolve_preset(row.handle)) == commit


def test_progress_is_quiet_off_a_terminal_or_when_asked(monkeypatch):
    from zoohub.hub import env

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.delenv("ZOOHUB_QUIET")
    assert not env.quiet()
    monkeypatch.setenv("ZOOHUB_QUIET", "1")
    assert env.quiet()
    monkeypatch.setattr("sys.stderr", object())  # not a terminal (no isatty)
    monkeypatch.delenv("ZOOHUB_QUIET")
    assert env.quiet()
