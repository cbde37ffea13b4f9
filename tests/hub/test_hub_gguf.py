"""hf:// repos of GGUF files (the loopback hub): `gguf_file=` picks one, a repo with a single GGUF
needs no name, only the named file is downloaded, and it loads offline once cached."""
from __future__ import annotations

import numpy as np
import pytest

import zoohub
from hubserver import Blob, Repo
from zoohub.errors import MissingFileError

pytest.importorskip("gguf")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gguf_blobs(tiny, tmp_path_factory):
    from tests.gguf.writer import Q, write_gguf

    folder = tiny.folder("llama", "causal_lm")
    root = tmp_path_factory.mktemp("gguf-blobs")
    return {name: write_gguf(folder, root / name, qtype).read_bytes()
            for name, qtype in (("tiny-F32.gguf", Q.F32), ("tiny-F16.gguf", Q.F16))}


def _publish(hub, repo_id, files):
    hub.state.repos[repo_id] = Repo()
    blobs = {name: Blob(data, lfs=name.endswith(".gguf")) for name, data in files.items()}
    hub.state.lfs.update({b.sha256: b.data for b in blobs.values() if b.lfs})  # the CDN serves LFS bytes
    hub.state.commit(repo_id, blobs)


def test_gguf_file_picks_one_and_only_it_is_downloaded(hub, gguf_blobs, tmp_path, monkeypatch):
    _publish(hub, "me/many-ggufs", {**gguf_blobs, "README.md": b"# GGUF files\n"})
    with pytest.raises(MissingFileError, match=r"2 GGUF files; pick one with gguf_file="):
        zoohub.CausalLM.from_preset("hf://me/many-ggufs")
    before = len(hub.requests("tiny-F32.gguf"))
    lm = zoohub.CausalLM.from_preset("hf://me/many-ggufs", gguf_file="tiny-F16.gguf")
    assert len(hub.requests("tiny-F32.gguf")) == before  # the other file is never fetched
    local = tmp_path / "tiny-F16.gguf"
    local.write_bytes(gguf_blobs["tiny-F16.gguf"])
    ids = {"input_ids": np.array([[5, 6, 7, 8]])}
    np.testing.assert_array_equal(lm.logits(ids), zoohub.CausalLM.from_preset(str(local)).logits(ids))
    assert lm.metadata["gguf"] == {"file": "tiny-F16.gguf", "types": ["F16", "F32"]}
    with pytest.raises(MissingFileError, match=r"no file 'nope\.gguf'.*tiny-F16\.gguf"):
        zoohub.CausalLM.from_preset("hf://me/many-ggufs", gguf_file="nope.gguf")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: loads with no network
    again = zoohub.CausalLM.from_preset("hf://me/many-ggufs", gguf_file="tiny-F16.gguf")
    np.testing.assert_array_equal(again.logits(ids), lm.logits(ids))


def test_a_repo_with_one_gguf_file_needs_no_name(hub, gguf_blobs):
    _publish(hub, "me/one-gguf", {"tiny-F32.gguf": gguf_blobs["tiny-F32.gguf"]})
    lm = zoohub.CausalLM.from_preset("hf://me/one-gguf")
    assert lm.family.model_type == "llama" and lm.metadata["gguf"]["file"] == "tiny-F32.gguf"
