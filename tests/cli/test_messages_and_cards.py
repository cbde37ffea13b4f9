"""What a new user reads: not-found hints, the download command an error recommends, model cards of
uploads. In-process and fast; the commands themselves are run in test_cli.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoohub import errors
from zoohub.hub import card
from zoohub.presets import registry
from zoohub.presets.resolve import resolve_preset


@pytest.mark.parametrize("name", ["zzzzqqqq", "bert_base_en_uncase"])
def test_not_found_messages_have_no_dangling_hint(name):
    for find in (registry.get_preset, resolve_preset):
        with pytest.raises(errors.PresetNotFoundError) as info:
            find(name)
        message = str(info.value)
        assert ";(" not in message.replace(" ", "") and "; (" not in message, message
        assert "(zoohub.list_presets() lists all" in message
        assert ("did you mean 'bert_base_en_uncased'" in message) == (name == "bert_base_en_uncase"), message


def test_registry_rows_have_known_tasks():
    assert {p.task for p in registry.all_presets()} <= set(registry.TASKS)
    row = dict(registry.get_preset("starter_bert_tiny_en").__dict__, name="x_first_hour", task="sentiment")
    with pytest.raises(ValueError, match="task 'sentiment'; tasks are backbone, text_classifier"):
        registry.register_preset(registry.Preset(**row))
    assert "x_first_hour" not in registry.list_presets()


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_offline_error_for_a_registry_name_recommends_zoohub_download(offline_empty_cache):
    with pytest.raises(errors.OfflineError) as info:
        resolve_preset("bert_base_en_uncased")
    assert "zoohub download bert_base_en_uncased" in str(info.value)
    assert "python -m zoohub.hub" not in str(info.value)
    with pytest.raises(errors.OfflineError, match="zoohub download bert_base_en_uncased --revision main"):
        resolve_preset("bert_base_en_uncased", revision="main")
    # A handle keeps the hub's own command, which takes handles.
    with pytest.raises(errors.OfflineError, match="python -m zoohub.hub download 'hf://google-bert/bert-base-uncased@"):
        resolve_preset("hf://google-bert/bert-base-uncased")


def test_hub_download_command_points_registry_names_to_zoohub_download(offline_empty_cache, tmp_path):
    run = subprocess.run([sys.executable, "-m", "zoohub.hub", "download", "bert_base_en_uncased"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "`zoohub download bert_base_en_uncased`" in run.stderr, run.stderr
    # Handles and folders it takes; a missing local preset is bad input (2), as for zoohub download.
    run = subprocess.run([sys.executable, "-m", "zoohub.hub", "download", "local://me/never-uploaded"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("python -m zoohub.hub: error: local://me/never-uploaded")
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    run = subprocess.run([sys.executable, "-m", "zoohub.hub", "download", str(folder)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == str(folder), run.stderr


BERT = {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}


def _front(text: str) -> list[str]:
    return text.split("---\n")[1].splitlines()


def test_card_names_base_model_and_license_from_a_registry_name():
    from zoohub.upload import _base, _license

    # What save_to_preset writes after fine-tuning the starter: no license, the base by registry name.
    meta = {"preset_name": "starter_bert_tiny_en", "base_model": "starter_bert_tiny_en", "task": "text_classifier"}
    text = card.model_card(BERT, meta, "local://me/x", license=_license(meta), base=_base(meta))
    assert 'license: "apache-2.0"' in _front(text)
    assert not any(line.startswith("base_model:") for line in _front(text))  # not a Hub repo id
    assert "Fine-tuned from starter_bert_tiny_en (local://zoohub/starter-bert-tiny)." in text
    # A registered Hub preset becomes the Hub's base_model, and brings its license.
    meta = {"base_model": "bert_base_en_uncased"}
    text = card.model_card(BERT, meta, "local://me/y", license=_license(meta), base=_base(meta))
    assert 'base_model: "google-bert/bert-base-uncased"' in _front(text) and 'license: "apache-2.0"' in _front(text)
    # A local folder means nothing to the card's readers and stays out of it.
    meta = {"base_model": "/home/someone/models/ft"}
    assert _base(meta) is None and _license(meta) is None
    assert "Fine-tuned" not in card.model_card(BERT, meta, "local://me/z")


def test_local_upload_card_of_a_preset_saved_from_the_starter(tmp_path):
    import zoohub
    from zoohub.backend import using

    with using("numpy"):
        folder = zoohub.TextClassifier.from_preset("starter_bert_tiny_en").save_to_preset(tmp_path / "saved")
    assert json.loads((folder / "zoohub.json").read_text())["base_model"] == "starter_bert_tiny_en"
    url = zoohub.upload_preset(tmp_path / "published", folder, metrics={"accuracy": 0.5})
    text = (tmp_path / "published" / "README.md").read_text()
    assert url.startswith("file://")
    assert 'license: "apache-2.0"' in _front(text) and "License: apache-2.0." in text
    assert "Fine-tuned from starter_bert_tiny_en (local://zoohub/starter-bert-tiny)." in text
