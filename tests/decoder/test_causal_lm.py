"""Every decoder family against transformers: logits, greedy and beam generation, sampling support,
stop strings, streaming, chat templates, scoring and the save round trip, on both backends."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.errors import UnsupportedConfigError
from zoohub.tasks.generation import trim_row

from .conftest import FAMILIES, left_padded_batch, torch, transformers

BACKENDS = ["numpy", "jax"]
_cache: dict = {}


@pytest.fixture
def lm(request, checkpoints):
    """A CausalLM for (family, backend); the backend stays selected for the test."""
    family, backend = request.param
    zoohub.set_backend(backend)
    key = (family, backend)
    if key not in _cache:
        _cache[key] = zoohub.CausalLM.from_preset(checkpoints[family])
    yield _cache[key]
    zoohub.set_backend("jax")


def _params(families, backends=BACKENDS):
    return [pytest.param((f, b), id=f"{f}-{b}") for f in families for b in backends]


def _torch_logits(model, ids, mask, pos):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(pos)).logits.numpy()


def _torch_generate(model, ids, mask, **kw):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pad_token_id=0,
                             eos_token_id=2, **kw).numpy()[:, ids.shape[1]:]
    return [trim_row(r, [2]) for r in out]


@pytest.mark.parametrize("lm", _params(FAMILIES), indirect=True)
def test_logits_match_transformers_left_padded(lm, torch_models):
    ids, mask, pos = left_padded_batch()
    ref = _torch_logits(torch_models[lm.family.model_type], ids, mask, pos)
    ours = lm.logits({"input_ids": ids, "attention_mask": mask})  # positions counted from the mask
    assert ours.shape == ref.shape
    assert np.abs(ours - ref)[mask == 1].max() <= 1e-4
    # the same rows unpadded give the same logits
    n = int(mask[1].sum())
    single = lm.logits({"input_ids": ids[1:2, -n:]})
    assert np.abs(single[0] - ours[1, -n:]).max() <= 1e-4


@pytest.mark.parametrize("lm", _params(FAMILIES), indirect=True)
def test_greedy_matches_transformers(lm, torch_models):
    ids, mask, _ = left_padded_batch(seed=1, lengths=(9, 6, 4))
    ref = _torch_generate(torch_models[lm.family.model_type], ids, mask, max_new_tokens=20, do_sample=False)
    ours = lm.generate_tokens({"input_ids": ids, "attention_mask": mask}, max_new_tokens=20)
    assert ours == ref
    assert max(map(len, ours)) >= 10  # a run that stops at once would prove little


@pytest.mark.parametrize("lm", _params(FAMILIES, ["numpy"]) + _params(["llama", "gemma2"], ["jax"]), indirect=True)
def test_beam_search_matches_transformers(lm, torch_models):
    ids, mask, _ = left_padded_batch(seed=2, lengths=(8, 5))
    ref = _torch_generate(torch_models[lm.family.model_type], ids, mask, max_new_tokens=12, num_beams=3,
                          do_sample=False)
    ours = lm.generate_tokens({"input_ids": ids, "attention_mask": mask}, max_new_tokens=12, num_beams=3)
    assert ours == ref


def _nucleus(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> set[int]:
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z)
    if top_k:
        order = order[:top_k]
    p = np.exp(z[order] - z[order].max())
    p /= p.sum()
    before = np.cumsum(p) - p
    return {int(i) for i, b in zip(order, before) if b < top_p}


# The samplers are family-generic: llama on both backends, qwen3 (q/k norms) on numpy.
@pytest.mark.parametrize("lm", _params(["llama"]) + _params(["qwen3"], ["numpy"]), indirect=True)
@pytest.mark.parametrize("sampler", [dict(top_k=4, temperature=2.0), dict(top_p=0.5, temperature=1.3),
                                     dict(top_k=6, top_p=0.8)])
def test_sampling_is_seeded_and_stays_in_support(lm, sampler):
    ids, mask, _ = left_padded_batch(seed=3, lengths=(7, 4))
    prompt = {"input_ids": ids, "attention_mask": mask}
    first = lm.generate_tokens(prompt, max_new_tokens=12, seed=5, stop_token_ids=[], **sampler)
    assert first == lm.generate_tokens(prompt, max_new_tokens=12, seed=5, stop_token_ids=[], **sampler)
    others = [lm.generate_tokens(prompt, max_new_tokens=12, seed=s, stop_token_ids=[], **sampler) for s in (6, 7)]
    assert any(o != first for o in others)
    for seed_run in [first] + others:
        for row, new in enumerate(seed_run):
            n = int(mask[row].sum())
            full = np.concatenate([ids[row, -n:], new])
            logits = lm.logits({"input_ids": full[None]})[0]
            for j, tok in enumerate(new):
                allowed = _nucleus(logits[n - 1 + j], sampler.get("temperature", 1.0), sampler.get("top_k", 0),
                                   sampler.get("top_p", 1.0))
                assert tok in allowed, (row, j, tok, allowed)


@pytest.mark.parametrize("lm", _params(["qwen2"]) + _params(["gemma"], ["numpy"]), indirect=True)
def test_stop_strings_and_streaming(lm):
    prompt = "the cat sat"
    full = lm.generate(prompt, max_new_tokens=24, stop_token_ids=[])
    assert len(full) > 6
    stop = full[3:5]
    cut = lm.generate(prompt, max_new_tokens=24, stop_token_ids=[], stop=[stop, "never-there"])
    assert cut == full[:full.find(stop)]
    assert "".join(lm.generate(prompt, max_new_tokens=24, stop_token_ids=[], stream=True)) == full
    assert "".join(lm.generate(prompt, max_new_tokens=24, stop_token_ids=[], stop=stop, stream=True)) == cut
    batch = lm.generate([prompt, "hello"], max_new_tokens=24, stop_token_ids=[], stop=[stop])
    assert batch[0] == cut and stop not in batch[1]


@pytest.mark.parametrize("lm", _params(["llama"]) + _params(["gemma2"], ["numpy"]), indirect=True)
def test_chat_template_matches_transformers(lm, checkpoints):
    tok = transformers.AutoTokenizer.from_pretrained(checkpoints[lm.family.model_type])
    messages = [{"role": "system", "content": "be brief "}, {"role": "user", "content": "hello world"},
                {"role": "assistant", "content": "the cat"}, {"role": "user", "content": "how are you?"}]
    for gen_prompt in (True, False):
        ours = lm.apply_chat_template(messages, add_generation_prompt=gen_prompt)
        assert ours == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
    ref_ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    reply = lm.chat(messages, max_new_tokens=8, stop_token_ids=[])
    expected = lm.generate_tokens({"input_ids": np.asarray([ref_ids])}, max_new_tokens=8, stop_token_ids=[])[0]
    assert reply == lm.tokenizer.decode(expected)


@pytest.mark.parametrize("lm", _params(FAMILIES, ["numpy"]), indirect=True)
def test_save_then_transformers_loads_same_logits(lm, tmp_path, torch_models):
    out = lm.save_to_preset(tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [lm.head.architecture]
    # every key that was read is written back, with its value
    read = json.loads((Path(lm.metadata["source"]) / "config.json").read_text())
    rewritten = {"architectures", "dtype", "torch_dtype", "transformers_version"}
    assert {k: v for k, v in config.items() if k in read and k not in rewritten} == {
        k: v for k, v in read.items() if k not in rewritten}
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    ids, mask, pos = left_padded_batch(seed=4)
    ref = _torch_logits(torch_models[lm.family.model_type], ids, mask, pos)
    assert np.abs(_torch_logits(reloaded, ids, mask, pos) - ref)[mask == 1].max() <= 1e-5
    assert np.abs(zoohub.CausalLM.from_preset(out).logits({"input_ids": ids, "attention_mask": mask}) - ref)[mask == 1].max() <= 1e-4


@pytest.mark.parametrize("lm", _params(["llama", "gpt2"], ["jax"]), indirect=True)
def test_score_is_log_softmax_of_next_token(lm, torch_models):
    texts = ["the cat sat on the mat", "hello"]
    scores = lm.score(texts)
    for text, s in zip(texts, scores):
        ids = np.asarray(lm.preprocessor.encode([text])[0])
        with torch.no_grad():
            logits = torch_models[lm.family.model_type](input_ids=torch.tensor(ids[None])).logits[0].double()
        ref = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:, None])).numpy()[:, 0]
        assert s.shape == (len(ids) - 1,) and np.abs(s - ref).max() <= 1e-4


@pytest.mark.parametrize("lm", _params(["llama"], ["jax"]), indirect=True)
def test_jax_prompts_in_one_bucket_do_not_recompile(lm):
    from zoohub.tasks.generation_jax import _programs

    lm.generate(["the cat", "a"], max_new_tokens=5)
    prefill, decode = _programs(lm)
    sizes = prefill._cache_size(), decode._cache_size()
    lm.generate(["hello world, how are you", "a dog"], max_new_tokens=9)
    lm.generate(["once upon a time there was", "the"], max_new_tokens=12, seed=3)
    assert (prefill._cache_size(), decode._cache_size()) == sizes


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "phi"])
def test_transformers_4_config_form_gives_same_logits(family, checkpoints, torch_models, tmp_path):
    """Older checkpoints spell RoPE as top-level rope_theta / rope_scaling / rope_local_base_freq /
    partial_rotary_factor (Phi-1.5 and Phi-2 ship so)."""
    zoohub.set_backend("numpy")
    folder = tmp_path / family
    shutil.copytree(checkpoints[family], folder)
    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters")
    if family == "phi":
        config["rope_theta"] = rope.pop("rope_theta")
        config["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    elif family == "llama":
        config["rope_theta"] = rope.pop("rope_theta")
        config["rope_scaling"] = rope
    else:
        config["rope_theta"] = rope["full_attention"].pop("rope_theta")
        config["rope_scaling"] = rope["full_attention"]
        config["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
    (folder / "config.json").write_text(json.dumps(config))
    ids, mask, pos = left_padded_batch(seed=5)
    ours = zoohub.CausalLM.from_preset(folder).logits({"input_ids": ids, "attention_mask": mask})
    ref = _torch_logits(torch_models[family], ids, mask, pos)
    assert np.abs(ours - ref)[mask == 1].max() <= 1e-4


@pytest.mark.parametrize("family,key,value", [
    ("llama", "partial_rotary_factor", 0.5), ("llama", "logits_scaling", 2.0), ("llama", "use_qk_norm", True),
    ("llama", "rope_interleaved", True), ("qwen2", "rope_parameters", {"rope_type": "default", "partial_rotary_factor": 0.5}),
    ("gemma", "attn_logit_softcapping", 50.0), ("gemma", "final_logit_softcapping", 30.0),
    ("gpt2", "add_cross_attention", True), ("mistral", "pruned_heads", {"0": [1]}),
])
def test_config_keys_that_change_the_math_are_refused_by_name(checkpoints, tmp_path, family, key, value):
    folder = tmp_path / family
    shutil.copytree(checkpoints[family], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(UnsupportedConfigError, match=f"{family} config has {key}="):
        zoohub.CausalLM.from_preset(folder)
    # the same keys at values that change nothing load
    harmless = {"partial_rotary_factor": 1.0, "logits_scaling": None, "use_qk_norm": False, "rope_interleaved": False,
                "rope_parameters": config.get("rope_parameters"), "attn_logit_softcapping": None,
                "final_logit_softcapping": None, "add_cross_attention": False, "pruned_heads": {}}[key]
    (folder / "config.json").write_text(json.dumps({**config, key: harmless}))
    zoohub.CausalLM.from_preset(folder)


def test_gemma_legacy_gelu_means_the_tanh_approximation(checkpoints, torch_models, tmp_path):
    """Official Gemma configs say hidden_act="gelu"; transformers reads it as gelu_pytorch_tanh."""
    zoohub.set_backend("numpy")
    folder = tmp_path / "gemma"
    shutil.copytree(checkpoints["gemma"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    ids, mask, pos = left_padded_batch(seed=6)
    ours = zoohub.CausalLM.from_preset(folder).logits({"input_ids": ids, "attention_mask": mask})
    assert np.abs(ours - _torch_logits(torch_models["gemma"], ids, mask, pos))[mask == 1].max() <= 1e-4


def test_unimplemented_config_is_named(checkpoints, tmp_path):
    folder = tmp_path / "dynamic_rope"
    shutil.copytree(checkpoints["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match="rope_parameters"):
        zoohub.CausalLM.from_preset(folder)


def test_numpy_backend_never_imports_jax(checkpoints):
    code = ("import sys, zoohub; zoohub.set_backend('numpy'); "
            f"lm = zoohub.CausalLM.from_preset({checkpoints['qwen3']!r}); "
            "lm.generate(['the cat', 'a'], max_new_tokens=4); lm.generate('x', num_beams=2, max_new_tokens=3); "
            "lm.chat([{'role': 'user', 'content': 'hi'}], max_new_tokens=2); "
            "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'jax was imported'")
    env = dict(os.environ, ZOOHUB_BACKEND="numpy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_hidden_states_match_transformers_and_round_trip(family, tiny, tmp_path):
    """The bare decoder (`...Model`, saved without a prefix) through zoohub.Backbone."""
    folder, model, _ = tiny(family, "backbone")
    ids, mask, pos = left_padded_batch(seed=7)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(pos)).last_hidden_state.numpy()
    zoohub.set_backend("numpy")
    backbone = zoohub.Backbone.from_preset(folder)
    ours = backbone.predict({"input_ids": ids, "attention_mask": mask})
    assert np.abs(ours - ref)[mask == 1].max() <= 1e-4
    again = transformers.AutoModel.from_pretrained(backbone.save_to_preset(tmp_path / "saved")).eval()
    with torch.no_grad():
        out = again(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(pos)).last_hidden_state.numpy()
    assert np.abs(out - ref)[mask == 1].max() <= 1e-6
