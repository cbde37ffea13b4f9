"""Generated over every family with a "seq2seq_lm" head: parity with transformers on both backends
(encoder, teacher-forced logits, greedy and beam generation), sampling, stops, streaming, save round
trips, fine-tuning and LoRA."""
from __future__ import annotations

import numpy as np
import pytest

from tests.seq2seq.conftest import FAMILIES, NEW, SOURCES, TARGETS, reference_generate, torch, transformers
from zoohub.backend import using

BACKENDS = ("numpy", "jax")


def _reference_logits(model, tokenizer, sources, targets):
    enc = tokenizer(sources, padding=True, return_tensors="pt")
    labels = tokenizer(targets, padding=True, return_tensors="pt").input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        out = model(**enc, labels=labels)
        hidden = model.get_encoder()(**enc).last_hidden_state
    return out.logits.numpy(), hidden.numpy(), enc, (labels != -100).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_encoder_and_teacher_forced_logits_match_transformers(seq2seq_models, model_type, backend):
    ours, model, tokenizer = seq2seq_models(model_type, backend)
    ref, ref_hidden, enc, real = _reference_logits(model, tokenizer, SOURCES, TARGETS)
    logits = ours.logits(SOURCES, TARGETS)
    np.testing.assert_allclose(logits[real], ref[real], atol=1e-4)
    family, params = ours.family, ours.family.backbone_params(ours.params)
    with using(backend):
        hidden = family.encode(params, ours.config, {k: np.asarray(v.numpy(), np.int32) for k, v in enc.items()})
    mask = enc["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(np.asarray(hidden)[mask], ref_hidden[mask], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_greedy_and_beam_tokens_equal_transformers_generate(seq2seq_models, model_type, backend):
    ours, model, tokenizer = seq2seq_models(model_type, backend)
    greedy = reference_generate(model, tokenizer, SOURCES, do_sample=False)
    assert ours.generate_tokens(SOURCES, max_new_tokens=NEW) == greedy
    beams = reference_generate(model, tokenizer, SOURCES, do_sample=False, num_beams=3, length_penalty=0.6,
                               num_return_sequences=2)
    assert ours.generate_tokens(SOURCES, max_new_tokens=NEW, num_beams=3, length_penalty=0.6,
                                num_return_sequences=2) == beams


@pytest.mark.parametrize("model_type", FAMILIES)
def test_sampling_is_seeded_stops_cut_and_streaming_equals_the_whole_text(seq2seq_models, model_type):
    ours, _, _ = seq2seq_models(model_type, "numpy")  # the loop is shared; jax's is checked by the test above
    kwargs = dict(max_new_tokens=NEW, sampler="top_k", top_k=20, temperature=4.0)  # flat enough to vary
    first = ours.generate_tokens(SOURCES, seed=3, **kwargs)
    assert first == ours.generate_tokens(SOURCES, seed=3, **kwargs)
    assert any(ours.generate_tokens(SOURCES, seed=s, **kwargs) != first for s in (4, 5, 6))
    # a seed whose text is long enough to hold a stop string (ids past the tiny vocabulary decode to '')
    seed = next(s for s in range(20) if len(ours.generate(SOURCES[0], seed=s, stop_token_ids=[], **kwargs)) > 2)
    kwargs = {**kwargs, "seed": seed, "stop_token_ids": []}
    whole = ours.generate(SOURCES[0], **kwargs)
    assert "".join(ours.generate(SOURCES[0], stream=True, **kwargs)) == whole
    stop = whole[1:3]
    cut = ours.generate(SOURCES[0], stop=[stop], **kwargs)
    assert cut == whole[:whole.find(stop)] and stop not in cut
    # score: log p of each target token, EOS included, agrees with the teacher-forced logits
    scores = ours.score(SOURCES, TARGETS)
    ids = ours.tokenizer.encode_batch(TARGETS, max_length=None)[0]
    assert [len(s) for s in scores] == [len(i) for i in ids] and all((s < 0).all() for s in scores)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_saved_model_loads_in_transformers_with_the_same_logits(seq2seq_models, model_type, tmp_path):
    ours, _, tokenizer = seq2seq_models(model_type, "numpy")
    folder = ours.save_to_preset(tmp_path / "saved")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    ref, _, _, real = _reference_logits(reloaded, tokenizer, SOURCES, TARGETS)
    np.testing.assert_allclose(ours.logits(SOURCES, TARGETS)[real], ref[real], atol=1e-4)


@pytest.mark.parametrize("model_type", FAMILIES[:1] if "t5" not in FAMILIES else ["t5"])  # compiles dominate: one family
def test_fit_lowers_the_loss_full_and_with_lora_and_saves_for_transformers(tiny, model_type, tmp_path):
    import zoohub

    folder, _, tokenizer = tiny(model_type, "seq2seq_lm")
    sources, targets = SOURCES * 2, TARGETS * 2
    with using("jax"):
        model = zoohub.Seq2SeqLM.from_preset(folder)
        before = model.evaluate(sources, targets, batch_size=4)["loss"]
        model.fit(sources, targets, epochs=3, batch_size=4, learning_rate=3e-3)
        after = model.evaluate(sources, targets, batch_size=4)["loss"]
        assert after < before - 0.1, (before, after)
        saved = model.save_to_preset(tmp_path / "tuned")
        ours = model.logits(SOURCES, TARGETS)
        ref, _, _, real = _reference_logits(transformers.AutoModelForSeq2SeqLM.from_pretrained(saved).eval(),
                                            tokenizer, SOURCES, TARGETS)
        np.testing.assert_allclose(ours[real], ref[real], atol=1e-4)

        lora = zoohub.Seq2SeqLM.from_preset(folder)
        adapted = lora.enable_lora(rank=4, alpha=8)
        assert adapted and all(n.rsplit(".", 1)[-1] in lora.family.lora_targets for n in adapted)
        lora.fit(sources, targets, epochs=2, batch_size=4, learning_rate=1e-2)
        assert lora.evaluate(sources, targets, batch_size=4)["loss"] < before - 0.05
