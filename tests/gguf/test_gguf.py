"""GGUF files as presets: logits and tokenizer ids against transformers' own GGUF loading of the same
file, one quantization type per family and every quantization type on one family; saving writes a
normal safetensors preset that transformers loads; unsupported and broken files fail clearly."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import zoohub
from tests.gguf.conftest import FAMILIES, SWEEP_TYPES, Q, token_batch, torch_logits, transformers
from tests.gguf.writer import write_gguf
from tests.tiny import SENTENCES
from zoohub.errors import CorruptFileError, MissingFileError, UnsupportedArchitectureError, UnsupportedConfigError

TEXTS = SENTENCES + ["  leading spaces", "ünïcödé ✓ and <s> inside", "tabs\tand\nnew lines"]


def close(ours, theirs, mask=None, tol=1e-4):
    """Equal within tol (relative to the largest logit) where the mask has real tokens: padded
    positions attend to nothing and their values are arbitrary."""
    real = np.ones(ours.shape[:2], bool) if mask is None else mask == 1
    scale = max(1.0, float(np.abs(theirs[real]).max()))
    assert float(np.abs(ours - theirs)[real].max()) <= tol * scale


def _logits(lm, ids, mask):
    return lm.logits({"input_ids": ids, "attention_mask": mask})


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_logits_match_transformers_gguf_loading(gguf_files, model_type):
    path, reference, _ = gguf_files(model_type)
    lm = zoohub.CausalLM.from_preset(str(path))
    assert lm.family.model_type == ("llama" if model_type == "mistral" else model_type)
    ids, mask = token_batch(reference.config.vocab_size, seed=len(model_type))
    close(_logits(lm, ids, mask), torch_logits(reference, ids, mask), mask)


@pytest.mark.parametrize("qtype", SWEEP_TYPES, ids=lambda q: q.name)
def test_every_quantization_type_matches_transformers(gguf_files, qtype):
    path, reference, _ = gguf_files("llama", qtype, sweep=True)
    from zoohub.presets.gguf import GGUFFile

    stored = GGUFFile(path).quantization_types()
    assert qtype.name in stored  # the sweep really holds blocks of this type
    lm = zoohub.CausalLM.from_preset(str(path))
    ids, mask = token_batch(reference.config.vocab_size, seed=3)
    close(_logits(lm, ids, mask), torch_logits(reference, ids, mask), mask)


def test_numpy_backend_and_dtype(gguf_files):
    path, reference, _ = gguf_files("llama", Q.Q4_K, sweep=True)
    ids, mask = token_batch(reference.config.vocab_size, seed=4)
    with zoohub.backend.using("numpy"):
        lm = zoohub.CausalLM.from_preset(str(path))
        close(_logits(lm, ids, mask), torch_logits(reference, ids, mask), mask)
    half = zoohub.CausalLM.from_preset(str(path), dtype="bfloat16")
    assert str(half.params["model"]["embed_tokens"]["weight"].dtype) == "bfloat16"


def test_f32_files_are_the_original_checkpoints(gguf_files):
    """The writer under test does what llama.cpp does: in F32, transformers' GGUF loading gives the
    original checkpoint's logits back, for every family."""
    for model_type in FAMILIES:
        path, reference, original = gguf_files(model_type, Q.F32)
        ids, mask = token_batch(reference.config.vocab_size, seed=1)
        close(torch_logits(reference, ids, mask), torch_logits(original, ids, mask), mask, tol=1e-5)
        close(_logits(zoohub.CausalLM.from_preset(str(path)), ids, mask), torch_logits(original, ids, mask), mask)


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "qwen2", "gpt2", "phi3", "bloom"])
def test_tokenizer_equals_transformers_gguf_conversion(gguf_files, model_type):
    path, _, _ = gguf_files(model_type)
    theirs = gguf_files.tokenizer(path)
    lm = zoohub.CausalLM.from_preset(str(path))
    assert lm.preprocessor.encode(TEXTS) == [theirs(t)["input_ids"] for t in TEXTS]
    ours = json.loads(lm.tokenizer.backend.to_str())
    reference = json.loads(theirs.backend_tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "model", "decoder", "added_tokens", "post_processor"):
        assert ours[part] == reference[part], part
    for name in ("bos_token", "eos_token", "pad_token"):
        assert lm.tokenizer.token(name) == getattr(theirs, name)
    assert lm.tokenizer.decode(lm.preprocessor.encode(["hello world"])[0]) == theirs.decode(
        theirs("hello world")["input_ids"], skip_special_tokens=True)
    assert "<|assistant|>" in lm.apply_chat_template([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("model_type,qtype", [("llama", Q.Q4_K), ("gpt2", None)])
def test_save_to_preset_round_trips_through_transformers(gguf_files, tmp_path, model_type, qtype):
    path, reference, _ = gguf_files(model_type, qtype, sweep=qtype is not None)
    lm = zoohub.CausalLM.from_preset(str(path))
    out = lm.save_to_preset(tmp_path / "saved")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert json.loads((out / "zoohub.json").read_text())["gguf"]["file"] == path.name
    saved = transformers.AutoModelForCausalLM.from_pretrained(str(out)).float().eval()
    ids, mask = token_batch(reference.config.vocab_size, seed=5)
    close(torch_logits(saved, ids, mask), torch_logits(reference, ids, mask), mask)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert [tok(t)["input_ids"] for t in TEXTS] == [gguf_files.tokenizer(path)(t)["input_ids"] for t in TEXTS]
    close(_logits(zoohub.CausalLM.from_preset(out), ids, mask), torch_logits(reference, ids, mask), mask)


def test_a_folder_with_one_gguf_file_or_gguf_file_named(gguf_files, tmp_path):
    path, reference, _ = gguf_files("qwen2")
    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(path, folder / "a.gguf")
    ids, mask = token_batch(reference.config.vocab_size)
    close(_logits(zoohub.CausalLM.from_preset(folder), ids, mask), torch_logits(reference, ids, mask), mask)
    shutil.copy(path, folder / "b.gguf")
    with pytest.raises(MissingFileError, match=r"2 GGUF files .*a\.gguf, b\.gguf.*gguf_file="):
        zoohub.CausalLM.from_preset(folder)
    close(_logits(zoohub.CausalLM.from_preset(folder, gguf_file="b.gguf"), ids, mask), torch_logits(reference, ids, mask), mask)
    with pytest.raises(MissingFileError, match="c.gguf"):
        zoohub.CausalLM.from_preset(folder, gguf_file="c.gguf")


# ---- unsupported and broken files ---------------------------------------------------------------------

def _minimal(path, arch: str, tensors: dict | None = None):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    for name, (data, raw) in (tensors or {"token_embd.weight": (np.zeros((4, 32), np.float32), None)}).items():
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("arch", ["mamba", "phi2", "gemma"])
def test_unsupported_architecture_is_named_with_the_supported_list(tmp_path, arch):
    with pytest.raises(UnsupportedArchitectureError, match=rf"architecture '{arch}' is not supported; supported: .*llama.*qwen2"):
        zoohub.CausalLM.from_preset(str(_minimal(tmp_path / "m.gguf", arch)))


def test_unsupported_quantization_type_is_named(gguf_files, tmp_path):
    import gguf

    source, _, _ = gguf_files("llama", Q.F32, sweep=True)
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(tmp_path / "q8k.gguf"), "llama")
    for field in reader.fields.values():
        if field.name.startswith("llama.") or field.name.startswith("tokenizer.") or field.name == "general.name":
            value = field.contents()
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.name == "blk.0.ffn_up.weight":  # Q8_K: llama.cpp's intermediate type, which gguf-py cannot dequantize
            rows, cols = data.shape
            data, raw = np.zeros((rows, cols // 256 * 292), np.uint8), Q.Q8_K
        else:
            raw = None
        writer.add_tensor(t.name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedConfigError, match=r"'blk\.0\.ffn_up\.weight' is stored as Q8_K.*supported: .*Q4_K"):
        zoohub.CausalLM.from_preset(str(tmp_path / "q8k.gguf"))


def test_metadata_that_would_change_the_model_is_refused(gguf_files, tmp_path):
    folder, _ = gguf_files.checkpoint("llama", FAMILIES["llama"][0], "spm")
    path = write_gguf(folder, tmp_path / "yarn.gguf", Q.F32, metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(UnsupportedConfigError, match=r"llama\.rope\.scaling\.type='yarn'.*RoPE scaling"):
        zoohub.CausalLM.from_preset(str(path))
    path = write_gguf(folder, tmp_path / "moe.gguf", Q.F32, metadata={"llama.expert_shared_count": 2})
    with pytest.raises(UnsupportedConfigError, match=r"llama\.expert_shared_count=2 is not one zoohub reads"):
        zoohub.CausalLM.from_preset(str(path))
    # llama.cpp's Llama 3 RoPE factors, which transformers drops
    path = write_gguf(folder, tmp_path / "llama3.gguf", Q.F32, extra_tensors={"rope_freqs.weight": np.ones(8, np.float32)})
    with pytest.raises(UnsupportedConfigError, match=r"'rope_freqs\.weight' has no place in a llama model"):
        zoohub.CausalLM.from_preset(str(path))


def test_tensors_are_dequantized_once_each_when_placed(gguf_files, monkeypatch):
    """The strict key and shape checks read nothing; then each GGUF tensor is dequantized once, as it is
    placed (stacked experts included), never all side by side first."""
    from zoohub.presets import gguf as gguf_module
    from zoohub.tasks import base

    path, _, _ = gguf_files("qwen3_moe")
    reads, real_dequantize, real_load = [], gguf_module._dequantize, base.load_params
    monkeypatch.setattr(gguf_module, "_dequantize", lambda t, where: reads.append(t.name) or real_dequantize(t, where))
    checked = []

    def load_params(*args, **kwargs):
        out = real_load(*args, **kwargs)
        checked.append(list(reads))
        return out

    monkeypatch.setattr(base, "load_params", load_params)
    zoohub.CausalLM.from_preset(str(path))
    assert checked == [[]]
    names = gguf_module.GGUFFile(path).tensor_names()
    assert sorted(reads) == sorted(names) and any(n.endswith("_exps.weight") for n in names)


@pytest.mark.parametrize("keep", [0.6, 0.999, 0.02])
def test_truncated_file_is_a_corrupt_file_error(gguf_files, tmp_path, keep):
    source, _, _ = gguf_files("llama", Q.Q8_0)
    data = source.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptFileError, match=r"cut\.gguf.*(truncated|not a readable GGUF)"):
        zoohub.CausalLM.from_preset(str(path))


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"not a gguf at all, just text" * 10)
    with pytest.raises(CorruptFileError, match=r"x\.gguf is not a readable GGUF file"):
        zoohub.CausalLM.from_preset(str(path))
