"""Upload with upload_preset, download by branch, tag, commit and PR ref through the real huggingface_hub."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from huggingface_hub import HfApi

import zoohub
from conftest import WRITE_TOKEN, files_of, write_zoohub_json
from zoohub.presets.resolve import resolve_preset


def upload(monkeypatch, repo, folder, **kwargs) -> str:
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    url = zoohub.upload_preset(f"hf://{repo}", folder, **kwargs)
    monkeypatch.delenv("HF_TOKEN")
    return url


def commit_of(url: str) -> str:
    return re.search(r"/commit/([0-9a-f]{40})$", url).group(1)


def test_upload_then_download_by_branch_tag_and_commit(monkeypatch, hub, tiny_preset):
    url = upload(monkeypatch, "me/roundtrip", tiny_preset)
    commit = commit_of(url)
    assert url == f"{hub.url}/me/roundtrip/commit/{commit}"
    HfApi(endpoint=hub.url, token=WRITE_TOKEN).create_tag("me/roundtrip", tag="v1.0")

    expected = files_of(tiny_preset)
    for handle in ("hf://me/roundtrip", "hf://me/roundtrip@v1.0", f"hf://me/roundtrip@{commit}"):
        folder = resolve_preset(handle)
        assert folder.name == commit
        got = files_of(folder)
        assert got == expected, handle  # byte-identical, and only the needed files (no README.md)
    assert resolve_preset("hf://me/roundtrip", revision="v1.0").name == commit


def test_upload_uses_lfs_for_weights_and_regular_commits_for_small_files(monkeypatch, hub, tiny_preset):
    upload(monkeypatch, "me/lfs-path", tiny_preset)
    repo = hub.state.repos["me/lfs-path"]
    files = repo.commits[repo.refs["main"]]
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    assert hub.requests("/lfs-upload/")  # the LFS batch + PUT path, not Xet
    assert files["model.safetensors"].data == (tiny_preset / "model.safetensors").read_bytes()


def test_unchanged_reupload_is_a_noop_and_a_change_makes_a_commit(monkeypatch, hub, preset_copy):
    first = upload(monkeypatch, "me/noop", preset_copy)
    repo = hub.state.repos["me/noop"]
    count = len(repo.commits)
    assert upload(monkeypatch, "me/noop", preset_copy) == first
    assert len(repo.commits) == count
    config = json.loads((preset_copy / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "good"}
    (preset_copy / "config.json").write_text(json.dumps(config))
    (preset_copy / "zoohub.json").unlink()  # the edit would otherwise (rightly) fail the manifest check
    second = upload(monkeypatch, "me/noop", preset_copy, commit_message="relabel")
    assert second != first and len(repo.commits) == count + 1
    assert json.loads(repo.commits[commit_of(second)]["config.json"].data)["id2label"]["1"] == "good"


def test_model_card(monkeypatch, hub, tiny_preset):
    upload(monkeypatch, "me/card", tiny_preset, metrics={"accuracy": 0.875})
    repo = hub.state.repos["me/card"]
    card = repo.commits[repo.refs["main"]]["README.md"].data.decode()
    assert card in hub.state.yaml_checked  # huggingface_hub validated it with the hub first
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "zoohub"
    assert front["pipeline_tag"] == "text-classification"
    assert front["base_model"] == "google-bert/bert-base-uncased"
    assert {"zoohub", "bert"} <= set(front["tags"])
    assert front["metrics"] == ["accuracy"]
    assert "zoohub.TextClassifier.from_preset('hf://me/card')" in card
    assert "AutoModelForSequenceClassification.from_pretrained('me/card')" in card
    assert "| accuracy | 0.875 |" in card
    assert WRITE_TOKEN not in card


def test_existing_readme_is_kept(monkeypatch, hub, preset_copy):
    (preset_copy / "README.md").write_text("# my own card\n")
    upload(monkeypatch, "me/own-card", preset_copy)
    repo = hub.state.repos["me/own-card"]
    assert repo.commits[repo.refs["main"]]["README.md"].data == b"# my own card\n"


def test_sharded_checkpoint_round_trip(monkeypatch, hub, sharded_preset):
    upload(monkeypatch, "me/sharded", sharded_preset)
    folder = resolve_preset("hf://me/sharded")
    shards = set(json.loads((sharded_preset / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    assert files_of(folder) == files_of(sharded_preset)


def test_pull_request_revision(monkeypatch, hub, tiny_preset, preset_copy):
    upload(monkeypatch, "me/with-pr", tiny_preset)
    (preset_copy / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    write_zoohub_json(preset_copy, task="text_classifier")
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    api.upload_folder(repo_id="me/with-pr", folder_path=preset_copy, create_pr=True)
    pr = resolve_preset("hf://me/with-pr@refs/pr/1")
    main = resolve_preset("hf://me/with-pr")
    assert json.loads((pr / "tokenizer_config.json").read_text()) == {"do_lower_case": False}
    assert json.loads((main / "tokenizer_config.json").read_text())["do_lower_case"] is True


def test_same_outputs_after_round_trip(monkeypatch, hub, tiny_preset):
    backbone = pytest.importorskip("zoohub.tasks.backbone")
    import numpy as np

    upload(monkeypatch, "me/outputs", tiny_preset)
    texts = ["the tiny model loads weights", "a zoo hub"]
    original = backbone.Backbone.from_preset(tiny_preset).predict(texts)
    loaded = backbone.Backbone.from_preset("hf://me/outputs").predict(texts)
    assert np.asarray(original).size > 0
    np.testing.assert_array_equal(np.asarray(original), np.asarray(loaded))
