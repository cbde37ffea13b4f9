"""BART, mBART and Marian beyond the generated Seq2SeqLM suite (tests/seq2seq/test_seq2seq_lm.py):
Marian's sinusoidal table, separate source/target vocabularies, its SentencePiece tokenizer files,
default decoder inputs, old files' aliases and missing logits bias, the bare base model saved for
transformers, and the 4.x config keys refused at values that change the math."""
from __future__ import annotations

import json

import numpy as np
import pytest

from zoohub.backbones import get_family
from zoohub.backbones.decoder import KVCache
from zoohub.backbones.loading import load_params
from zoohub.backend import using
from zoohub.errors import UnsupportedConfigError
from zoohub.presets.weights import read_weights, unflatten
from zoohub.tasks.tokenizer import Tokenizer, pad_batch
from zoohub.tasks.tokenizer_spm import SpmTokenizer

from tests.tiny import SENTENCES, build, recipe_of

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SOURCES = ["the cat sat on the mat", "hello world, how are you?", "a dog"]
TARGETS = ["once upon a time", "the end", "zoohub generates text quickly"]


def _load(folder, model_type):
    family = get_family(model_type)
    config = family.config_class.from_hf(json.loads((folder / "config.json").read_text()))
    flat, _ = load_params(read_weights(folder), family, config, family.heads["seq2seq_lm"])
    return family, config, flat


def _batch(tokenizer: Tokenizer, texts, target=False):
    kwargs = {"target": True} if target and isinstance(tokenizer, SpmTokenizer) else {}  # Marian's target model
    ids, _ = tokenizer.encode_batch(texts, max_length=None, **kwargs)
    return pad_batch(ids, length=max(map(len, ids)), pad_id=tokenizer.pad_token_id)


def _reference(model, enc, dec_ids, dec_mask=None):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(enc[0].astype(np.int64)), attention_mask=torch.from_numpy(enc[1]),
                    decoder_input_ids=torch.from_numpy(dec_ids.astype(np.int64)),
                    decoder_attention_mask=None if dec_mask is None else torch.from_numpy(dec_mask))
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


def _decoder_inputs(config, tokenizer, target=True):
    labels, mask = _batch(tokenizer, TARGETS, target=target)
    start = np.full((len(labels), 1), config.token_id("decoder_start_token_id"), np.int32)
    return np.concatenate([start, labels[:, :-1]], 1), np.concatenate([np.ones_like(start), mask[:, :-1]], 1)


def _ours(family, config, flat, enc, dec_ids, dec_mask):
    """(teacher-forced logits, logits of a cached step-by-step decode) on numpy."""
    head = family.heads["seq2seq_lm"]
    with using("numpy"):
        params = unflatten(flat)
        src = {"input_ids": enc[0], "attention_mask": enc[1]}
        hidden = family.forward(params["model"], config, {**src, "decoder_input_ids": dec_ids,
                                                          "decoder_attention_mask": dec_mask})
        logits = head(params, config, hidden)
        cross = family.cross_cache(params["model"], config, family.encode(params["model"], config, src), enc[1])
        b, t = dec_ids.shape
        slots = t + 2  # longer than the steps: unwritten slots must stay invisible
        shape = (config.cache_layers, b, slots, config.kv_heads, config.dim_per_head)
        cache = KVCache(k=np.zeros(shape, np.float32), v=np.zeros(shape, np.float32),
                        positions=np.broadcast_to(np.arange(slots, dtype=np.int32), (b, slots)).copy(),
                        real=np.ones((b, slots), np.int32), index=0)
        steps = []
        for i in range(t):
            step = {"input_ids": dec_ids[:, i:i + 1], "position_ids": np.full((b, 1), i, np.int32)}
            out, cache = family.decode(params["model"], config, step, cross, cache=cache._replace(index=i))
            steps.append(head(params, config, out))
        return logits, np.concatenate(steps, 1)


def test_marian_with_separate_vocabularies(tmp_path):
    """share_encoder_decoder_embeddings=False: two token tables, logits over the target vocabulary,
    lm_head tied to the decoder's table."""
    base = recipe_of("marian")
    recipe = type(base)(config=base.config, seed=41, tokenizer=base.tokenizer, kwargs={
        **base.kwargs, "share_encoder_decoder_embeddings": False, "decoder_vocab_size": 101})
    model, _ = build("marian", "seq2seq_lm", tmp_path, recipe=recipe)
    family, config, flat = _load(tmp_path, "marian")
    assert config.target_vocab_size == 101 and "model.shared.weight" not in flat
    assert "lm_head.weight" not in flat  # tied: read from the decoder's table
    tokenizer = Tokenizer.from_folder(tmp_path)
    enc = _batch(tokenizer, SOURCES)
    dec_ids, dec_mask = _decoder_inputs(config, tokenizer)
    dec_ids[:, -1] = 100  # a target id past the source vocabulary
    ref_hidden, ref_logits = _reference(model, enc, dec_ids, dec_mask)
    logits, stepped = _ours(family, config, flat, enc, dec_ids, dec_mask)
    assert logits.shape[-1] == 101
    rows = dec_mask.astype(bool)
    np.testing.assert_allclose(logits[rows], ref_logits[rows], atol=1e-4, rtol=0)
    np.testing.assert_allclose(stepped[rows], logits[rows], atol=1e-4, rtol=0)
    # and Seq2SeqLM generates with it as transformers does (greedy)
    import zoohub

    with torch.no_grad():
        ref = model.generate(input_ids=torch.from_numpy(enc[0].astype(np.int64)), attention_mask=torch.from_numpy(enc[1]),
                             max_new_tokens=6, do_sample=False, num_beams=1)
    with using("numpy"):
        texts = zoohub.Seq2SeqLM.from_preset(tmp_path).generate(SOURCES, max_new_tokens=6)
    assert texts == [tokenizer.decode(row) for row in ref.numpy()] and any(texts)


@pytest.mark.parametrize("positions,dim", [(64, 45), (40, 48)])
def test_sinusoidal_table_is_transformers_layout(positions, dim):
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    from zoohub.backbones.marian import sinusoidal_table

    reference = MarianSinusoidalPositionalEmbedding(positions, dim).create_weight().numpy()
    np.testing.assert_array_equal(sinusoidal_table(positions, dim), reference)


def test_files_with_tied_aliases_and_position_buffers_load(tiny):
    """Older files store BART's `encoder/decoder.embed_tokens` beside `shared`, and Marian's computed
    position tables: both load, the aliases and tables are not read."""
    for model_type in ("bart", "marian"):
        folder = tiny.folder(model_type, "seq2seq_lm")
        family = get_family(model_type)
        config = family.config_class.from_hf(json.loads((folder / "config.json").read_text()))
        tensors = dict(read_weights(folder))
        plain, _ = load_params(tensors, family, config, family.heads["seq2seq_lm"])
        shared = tensors["model.shared.weight"]
        extra = {f"model.{side}.embed_tokens.weight": shared for side in ("encoder", "decoder")}
        extra["lm_head.weight"] = shared
        if model_type == "marian":
            extra.update({f"model.{side}.embed_positions.weight": np.zeros((64, 48), np.float32)
                          for side in ("encoder", "decoder")})
        loaded, _ = load_params({**tensors, **extra}, family, config, family.heads["seq2seq_lm"])
        assert set(loaded) == set(plain) and all(np.array_equal(loaded[k], plain[k]) for k in plain)


# ---- Marian's tokenizer files -------------------------------------------------------------------------

TOKENIZER_TEXTS = SENTENCES + [">>fr<< hello world", "unknown ZZZ words </s> inside", "", "  extra   spaces "]


def test_marian_tokenizer_matches_transformers(tiny, tmp_path):
    folder, _, reference = tiny("marian", "seq2seq_lm")
    assert not (folder / "tokenizer.json").exists() and (folder / "source.spm").is_file()
    ours = Tokenizer.from_folder(folder)
    ids, _ = ours.encode_batch(TOKENIZER_TEXTS, max_length=None)
    assert ids == [reference(t)["input_ids"] for t in TOKENIZER_TEXTS]
    targets, _ = ours.encode_batch(TARGETS + ["THE CAT"], max_length=None, target=True)
    assert targets == [reference(text_target=t)["input_ids"] for t in TARGETS + ["THE CAT"]]
    assert targets != ours.encode_batch(TARGETS + ["THE CAT"], max_length=None)[0]  # the target model differs
    truncated, _ = ours.encode_batch(SENTENCES, max_length=5)
    assert truncated == [reference(t, max_length=5, truncation=True)["input_ids"] for t in SENTENCES]
    pairs, _ = ours.encode_batch(SOURCES, TARGETS, max_length=None)
    assert pairs == [reference(a, b)["input_ids"] for a, b in zip(SOURCES, TARGETS)]
    for row in ids + [[5, 0, 1, 96, 7, 95, 0]]:
        for skip in (True, False):
            assert ours.decode(row, skip_special_tokens=skip) == reference.decode(row, skip_special_tokens=skip)
    assert (ours.pad_token_id, ours.token_id("eos_token"), ours.vocab_size) == (
        reference.pad_token_id, reference.eos_token_id, reference.vocab_size)
    # saved, it loads in transformers with the same ids
    out = tmp_path / "saved"
    out.mkdir()
    ours.save(out)
    again = transformers.AutoTokenizer.from_pretrained(out)
    assert [again(t)["input_ids"] for t in TOKENIZER_TEXTS] == ids


# ---- configs ------------------------------------------------------------------------------------------

BART_BASE_KEYS = {  # as facebook/bart-base's config.json (4.x era) writes them
    "activation_dropout": 0.1, "activation_function": "gelu", "add_bias_logits": False, "add_final_layer_norm": False,
    "architectures": ["BartModel"], "attention_dropout": 0.1, "bos_token_id": 0, "classif_dropout": 0.1,
    "classifier_dropout": 0.0, "d_model": 768, "decoder_attention_heads": 12, "decoder_ffn_dim": 3072,
    "decoder_layerdrop": 0.0, "decoder_layers": 6, "decoder_start_token_id": 2, "dropout": 0.1, "early_stopping": True,
    "encoder_attention_heads": 12, "encoder_ffn_dim": 3072, "encoder_layerdrop": 0.0, "encoder_layers": 6,
    "eos_token_id": 2, "forced_eos_token_id": 2, "forced_bos_token_id": 0, "gradient_checkpointing": False,
    "init_std": 0.02, "is_encoder_decoder": True, "max_position_embeddings": 1024, "model_type": "bart",
    "no_repeat_ngram_size": 3, "normalize_before": False, "normalize_embedding": True, "num_beams": 4,
    "num_hidden_layers": 6, "pad_token_id": 1, "scale_embedding": False, "torch_dtype": "float32",
    "use_cache": True, "vocab_size": 50265, "extra_pos_embeddings": 2, "force_bos_token_to_be_generated": False,
}
OPUS_MT_KEYS = {  # as Helsinki-NLP/opus-mt-en-de's config.json writes them
    "activation_dropout": 0.0, "activation_function": "swish", "add_bias_logits": False, "add_final_layer_norm": False,
    "architectures": ["MarianMTModel"], "attention_dropout": 0.0, "bad_words_ids": [[58100]], "bos_token_id": 0,
    "classif_dropout": 0.0, "d_model": 512, "decoder_attention_heads": 8, "decoder_ffn_dim": 2048,
    "decoder_layerdrop": 0.0, "decoder_layers": 6, "decoder_start_token_id": 58100, "dropout": 0.1,
    "encoder_attention_heads": 8, "encoder_ffn_dim": 2048, "encoder_layerdrop": 0.0, "encoder_layers": 6,
    "eos_token_id": 0, "init_std": 0.02, "is_encoder_decoder": True, "max_length": 512,
    "max_position_embeddings": 512, "model_type": "marian", "normalize_before": False, "normalize_embedding": False,
    "num_beams": 4, "num_hidden_layers": 6, "pad_token_id": 58100, "scale_embedding": True,
    "static_position_embeddings": True, "vocab_size": 58101, "_num_labels": 3,
}


def test_hub_configs_read_and_math_changing_values_are_refused():
    bart, marian = get_family("bart").config_class, get_family("marian").config_class
    config = bart.from_hf(BART_BASE_KEYS)
    assert (config.cache_layers, config.dim_per_head, config.token_id("decoder_start_token_id")) == (6, 64, 2)
    config = marian.from_hf(OPUS_MT_KEYS)
    assert (config.embed_scale, config.target_vocab_size, config.token_id("pad_token_id")) == (512 ** 0.5, 58101, 58100)
    refused = [(bart, {"normalize_before": True}), (bart, {"add_final_layer_norm": True}),
               (bart, {"normalize_embedding": False}), (bart, {"static_position_embeddings": True}),
               (bart, {"is_encoder_decoder": False}),
               (marian, {"normalize_embedding": True}), (marian, {"static_position_embeddings": False}),
               (marian, {"relative_attention": True})]
    for config_class, change in refused:
        base = BART_BASE_KEYS if config_class is bart else OPUS_MT_KEYS
        with pytest.raises(UnsupportedConfigError, match=next(iter(change))):
            config_class.from_hf({**base, **change})
    for change in ({"activation_function": "swiglu"}, {"num_hidden_layers": 5}, {"d_model": 770}):
        with pytest.raises(UnsupportedConfigError):
            bart.from_hf({**BART_BASE_KEYS, **change})
    with pytest.raises(UnsupportedConfigError, match="decoder_vocab_size"):
        marian.from_hf({**OPUS_MT_KEYS, "decoder_vocab_size": 100})


@pytest.mark.parametrize("model_type", ["bart", "mbart"])
def test_default_decoder_inputs_are_the_shifted_inputs(tiny, model_type):
    """Without decoder inputs BartModel shifts the inputs right after decoder_start_token_id; mBART
    wraps each row's last real token to the front instead."""
    folder, model, _ = tiny(model_type, "seq2seq_lm")
    family, config, flat = _load(folder, model_type)
    ids, mask = _batch(Tokenizer.from_folder(folder), SOURCES)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask)).logits.numpy()
    with using("numpy"):
        params = unflatten(flat)
        hidden = family.forward(params["model"], config, {"input_ids": ids, "attention_mask": mask})
        logits = family.heads["seq2seq_lm"](params, config, hidden)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)


def test_a_base_model_file_loads_with_a_zero_logits_bias(tiny, tmp_path):
    """facebook/bart-base is saved from BartModel: no final_logits_bias; transformers makes it zeros."""
    folder, model, _ = tiny("bart", "seq2seq_lm")
    model.model.save_pretrained(tmp_path)
    family = get_family("bart")
    config = family.config_class.from_hf(json.loads((tmp_path / "config.json").read_text()))
    flat, report = load_params(read_weights(tmp_path), family, config, family.heads["seq2seq_lm"])
    assert report.new_tensors == ["final_logits_bias"] and not flat["final_logits_bias"].any()
    reference = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask = _batch(Tokenizer.from_folder(folder), SOURCES)
    with torch.no_grad():
        ref = reference(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask)).logits
    with using("numpy"):
        params = unflatten(flat)
        hidden = family.forward(params["model"], config, {"input_ids": ids, "attention_mask": mask})
        logits = family.heads["seq2seq_lm"](params, config, hidden)
    np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("model_type", ["bart", "marian"])
def test_backbone_saves_a_base_model_transformers_loads(tiny, model_type, tmp_path):
    """The bare encoder-decoder (BartModel / MarianModel: no prefix, no head) saved by zoohub loads in
    transformers with the same decoder states; Marian's computed position tables are not written."""
    import zoohub
    from zoohub.backbones.bart import shift_right

    folder, _, _ = tiny(model_type, "seq2seq_lm")
    with using("numpy"):
        backbone = zoohub.Backbone.from_preset(folder)
        hidden = backbone.predict(SOURCES)
    out = backbone.save_to_preset(tmp_path / "saved")
    assert not any("embed_positions" in k for k in read_weights(out)) or model_type == "bart"
    reference = transformers.AutoModel.from_pretrained(out).eval()
    ids, mask = _batch(backbone.tokenizer, SOURCES)
    with using("numpy"):
        decoder_ids = np.asarray(shift_right(ids, backbone.config)).astype(np.int64)  # MarianModel does not shift
    with torch.no_grad():
        ref = reference(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask),
                        decoder_input_ids=torch.from_numpy(decoder_ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden, ref, atol=1e-4, rtol=0)


def test_marian_tokenizer_with_separate_vocabularies(tiny, tmp_path):
    """separate_vocabs: targets are numbered by target_vocab.json, decoding uses the target model."""
    import shutil

    folder = tiny.folder("marian", "seq2seq_lm")
    for name in ("source.spm", "target.spm", "vocab.json"):
        shutil.copy(folder / name, tmp_path / name)
    source_vocab = json.loads((folder / "vocab.json").read_text())
    pieces = [p for p in source_vocab if p not in ("</s>", "<unk>", "<pad>")][::-1]  # another numbering
    (tmp_path / "target_vocab.json").write_text(json.dumps(
        {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}, "<pad>": len(pieces) + 2}))
    reference = transformers.MarianTokenizer(
        source_spm=str(tmp_path / "source.spm"), target_spm=str(tmp_path / "target.spm"),
        vocab=str(tmp_path / "vocab.json"), target_vocab_file=str(tmp_path / "target_vocab.json"), separate_vocabs=True)
    reference.save_pretrained(tmp_path)
    ours = Tokenizer.from_folder(tmp_path)
    assert ours.encode_batch(SOURCES, max_length=None)[0] == [reference(t)["input_ids"] for t in SOURCES]
    targets = ours.encode_batch(TARGETS, max_length=None, target=True)[0]
    assert targets == [reference(text_target=t)["input_ids"] for t in TARGETS]
    assert targets != ours.encode_batch(TARGETS, max_length=None)[0]
    for row in targets:
        assert ours.decode(row) == reference.decode(row, skip_special_tokens=True)
