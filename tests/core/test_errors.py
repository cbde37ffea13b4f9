"""Bad input gets a clear error that names the thing, and nothing half-written is left behind."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

import zoohub
from zoohub import errors
from zoohub.presets.folder import save_preset_folder
from zoohub.presets.weights import read_weights, write_weights

CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 11, "hidden_size": 6,
          "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 7}


def _tiny_bert(folder, **overrides):
    """A valid one-layer BertModel checkpoint written with our own writer."""
    from zoohub.backbones import get_family

    family = get_family("bert")
    config = family.config_class.from_hf({**CONFIG, **overrides})
    rng = np.random.default_rng(0)
    tensors = {k: rng.normal(size=s).astype(np.float32) for k, s in family.shapes(config).items()}
    folder.mkdir(parents=True, exist_ok=True)
    write_weights(tensors, folder)
    (folder / "config.json").write_text(json.dumps({**CONFIG, **overrides}))
    return folder


def test_pickled_weights_are_refused_without_reading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(errors.UnsafeFormatError, match="safetensors"):
        zoohub.Backbone.from_preset(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bertt"}))
    with pytest.raises(errors.UnsupportedArchitectureError, match=r"'bertt'.*did you mean 'bert'.*supported:.*distilbert"):
        zoohub.Backbone.from_preset(tmp_path)


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(errors.MissingFileError, match="config.json"):
        zoohub.Backbone.from_preset(tmp_path)


def test_missing_weights_names_the_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(errors.MissingFileError, match="model.safetensors"):
        zoohub.Backbone.from_preset(tmp_path)


def test_truncated_weights_are_detected(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(errors.CorruptFileError, match="truncated"):
        zoohub.Backbone.from_preset(folder)


def test_garbage_header_is_detected(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(errors.CorruptFileError, match="not valid JSON"):
        read_weights(folder)


def test_shape_mismatch_names_the_tensor(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({**CONFIG, "intermediate_size": 9}))
    with pytest.raises(errors.WeightMismatchError, match=r"intermediate\.dense\.weight: checkpoint \(8, 6\), config implies \(9, 6\)"):
        zoohub.Backbone.from_preset(folder)


def test_key_mismatch_names_the_first_differences(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 2}))
    with pytest.raises(errors.WeightMismatchError, match=r"missing 16: encoder\.layer\.1\."):
        zoohub.Backbone.from_preset(folder)


def test_math_changing_config_field_is_rejected_by_name(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({**CONFIG, "position_embedding_type": "relative_key"}))
    with pytest.raises(errors.UnsupportedConfigError, match="position_embedding_type='relative_key'"):
        zoohub.Backbone.from_preset(folder)


def test_unsupported_activation_is_rejected(tmp_path):
    folder = _tiny_bert(tmp_path / "m", hidden_act="mish")
    model = zoohub.Backbone.from_preset(folder)
    with pytest.raises(errors.UnsupportedConfigError, match="'mish'"):
        model.predict({"input_ids": np.array([[1, 2, 3]])})


def test_buffers_and_legacy_keys_are_accepted(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    tensors = dict(read_weights(folder))
    tensors = {k: np.array(v) for k, v in tensors.items()}
    tensors["embeddings.position_ids"] = np.arange(7, dtype=np.int64)[None]
    write_weights(tensors, folder)
    legacy = {**CONFIG, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(legacy))
    model = zoohub.Backbone.from_preset(folder)
    assert model.predict({"input_ids": np.array([[1, 2, 3]])}).shape == (1, 3, 6)


def test_interrupted_save_keeps_the_previous_preset(tmp_path):
    target = tmp_path / "preset"
    save_preset_folder(target, lambda d: (d / "config.json").write_text("{\"v\": 1}"), metadata={})

    def crash(d):
        (d / "config.json").write_text("{\"v\": 2}")
        raise KeyboardInterrupt("killed mid-save")

    with pytest.raises(KeyboardInterrupt):
        save_preset_folder(target, crash, metadata={})
    assert json.loads((target / "config.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset"]


def test_manifest_records_sizes_and_hashes(tmp_path):
    folder = _tiny_bert(tmp_path / "m")
    out = zoohub.Backbone.from_preset(folder).save_to_preset(tmp_path / "saved")
    meta = json.loads((out / "zoohub.json").read_text())
    assert meta["task"] == "backbone" and meta["architecture"] == "BertModel"
    assert meta["num_params"] > 0 and meta["preprocessing"]["sequence_length"] == 7
    assert set(meta["files"]) == {"config.json", "model.safetensors"}
    assert meta["files"]["model.safetensors"]["size"] == (out / "model.safetensors").stat().st_size
    from zoohub.hub.integrity import check_manifest

    check_manifest(out)
    (out / "config.json").write_text((out / "config.json").read_text() + " ")
    with pytest.raises(errors.CorruptFileError, match="config.json"):
        check_manifest(out)


def test_bad_text_input(tmp_path):
    from zoohub.tasks.text_task import as_text_list

    with pytest.raises(errors.InputError, match="empty"):
        as_text_list([])
    with pytest.raises(errors.InputError, match=r"texts\[1\] is int"):
        as_text_list(["a", 3])
