"""What the generated encoder suite does not reach for MPNet, ALBERT and ELECTRA: layer-group schedules,
ELECTRA without its embedding projection, MPNet's relative buckets past their exact range, the
pre-training checkpoints (ALBERT's sentence-order head, ELECTRA's discriminator), the per-token heads'
math, an MPNet sentence embedder, and the configs refused by name."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import zoohub
from tests.tiny import PREPROCESSORS, build, recipe_of
from zoohub.backbones import get_family
from zoohub.backbones.loading import load_params
from zoohub.backbones.mpnet import relative_buckets
from zoohub.backend import using
from zoohub.errors import UnsupportedConfigError

from .conftest import TEXTS, reference_outputs, torch, transformers


def _variant(model_type: str, **changes):
    recipe = recipe_of(model_type)
    return dataclasses.replace(recipe, kwargs={**recipe.kwargs, **changes})


def _backbone_matches(folder, ref_model, tokenizer, model_type, texts=TEXTS, **options):
    ours = zoohub.Backbone.from_preset(folder, **options).predict(texts)
    ref, mask = reference_outputs(ref_model, tokenizer, texts, model_type=model_type)
    mask = mask.astype(bool)
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *path, leaf = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


@pytest.mark.parametrize("layers,groups,inner", [(2, 3, 1), (5, 2, 3)])
def test_albert_group_schedules_match_transformers(tmp_path, layers, groups, inner):
    # more groups than steps (group 2 is stored, never applied); and 5 steps over 2 groups of 3 layers
    recipe = _variant("albert", num_hidden_layers=layers, num_hidden_groups=groups, inner_group_num=inner)
    ref_model, tokenizer = build("albert", "backbone", tmp_path, recipe)
    names = load_file(tmp_path / "model.safetensors")
    assert f"encoder.albert_layer_groups.{groups - 1}.albert_layers.{inner - 1}.ffn.weight" in names
    with using("numpy"):
        _backbone_matches(tmp_path, ref_model, tokenizer, "albert")


def test_electra_without_projection_when_widths_agree(tmp_path):
    recipe = _variant("electra", embedding_size=48)
    ref_model, tokenizer = build("electra", "masked_lm", tmp_path, recipe)
    assert not any("embeddings_project" in k for k in load_file(tmp_path / "model.safetensors"))
    with using("numpy"):
        mlm = zoohub.MaskedLM.from_preset(tmp_path)
    ref, mask = reference_outputs(ref_model, tokenizer, TEXTS, task="masked_lm", model_type="electra")
    np.testing.assert_allclose(mlm.predict(TEXTS)[mask.astype(bool)], ref[mask.astype(bool)], atol=1e-4, rtol=0)


def test_mpnet_buckets_equal_transformers_past_the_log_range():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    t = 400  # distances to 399: exact (< 8), logarithmic (to 128), then clipped to the last bucket
    relative = torch.arange(t)[None, :] - torch.arange(t)[:, None]
    ref = MPNetEncoder.relative_position_bucket(relative).numpy()
    np.testing.assert_array_equal(relative_buckets(t), ref)
    assert {0, 15, 17, 31} <= set(np.unique(ref).tolist())  # 16 would be a key 0 ahead


@pytest.fixture(scope="module")
def long_mpnet(tmp_path_factory):
    """MPNet with room for 198 tokens, past the 128 where the relative buckets stop growing."""
    folder = tmp_path_factory.mktemp("mpnet-long")
    return (folder,) + build("mpnet", "backbone", folder, _variant("mpnet", max_position_embeddings=200))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_mpnet_long_padded_batch_matches_transformers(long_mpnet, backend):
    folder, ref_model, tokenizer = long_mpnet
    texts = [" ".join(["the great film"] * 52), "awful movie"]  # 158 tokens, and one padded far
    with using(backend):
        _backbone_matches(folder, ref_model, tokenizer, "mpnet", texts, sequence_length=198)


@pytest.mark.parametrize("model_type", ["mpnet", "albert", "electra"])
@pytest.mark.parametrize("task", ["token_classifier", "question_answerer"])
def test_per_token_heads_math(encoder_checkpoints, model_type, task):
    """The family's forward plus its head, against transformers' per-token logits (numpy)."""
    folder, ref_model, tokenizer = encoder_checkpoints[(model_type, task)]
    family = get_family(model_type)
    config = family.config_class.from_hf(json.loads((folder / "config.json").read_text()))
    head = family.heads[task]
    flat, report = load_params(load_file(folder / "model.safetensors"), family, config, head,
                               num_labels=ref_model.config.num_labels)
    assert not report.new_tensors and not report.unused_tensors
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    if not family.token_types:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        out = ref_model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    ref = out.logits if task == "token_classifier" else torch.stack([out.start_logits, out.end_logits], -1)
    with using("numpy"):
        params = _nested(flat)
        logits = head(params, config, family.forward(params[family.prefix], config, dict(enc)), dict(enc))
    mask = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(logits[mask], ref.numpy()[mask], atol=1e-4, rtol=0)


def _pretraining_checkpoint(model_type: str, folder):
    """A tiny `*ForPreTraining` checkpoint from the family's recipe (ALBERT's MLM + sentence-order
    heads, ELECTRA's replaced-token discriminator)."""
    recipe = recipe_of(model_type)
    config = getattr(transformers, recipe.config)(**{**recipe.kwargs, "num_labels": 2})
    torch.manual_seed(recipe.seed + 1)
    model = getattr(transformers, f"{model_type.capitalize()}ForPreTraining")(config).float().eval()
    model.save_pretrained(folder)
    tokenizer = PREPROCESSORS[recipe.tokenizer](folder)
    tokenizer.save_pretrained(folder)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    if not get_family(model_type).token_types:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return out, enc["attention_mask"].numpy().astype(bool)


def test_albert_pretraining_checkpoint_loads_as_masked_lm(tmp_path):
    out, mask = _pretraining_checkpoint("albert", tmp_path)
    with using("numpy"):
        mlm = zoohub.MaskedLM.from_preset(tmp_path)
        hidden = zoohub.Backbone.from_preset(tmp_path).predict(TEXTS)
    assert any(name.startswith("sop_classifier.") for name in mlm.load_report.unused_tensors)
    np.testing.assert_allclose(mlm.predict(TEXTS)[mask], out.prediction_logits.numpy()[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden[mask], out.hidden_states[-1].numpy()[mask], atol=1e-4, rtol=0)


def test_electra_discriminator_loads_as_backbone_and_new_classifier(tmp_path):
    out, mask = _pretraining_checkpoint("electra", tmp_path)
    with using("numpy"):
        hidden = zoohub.Backbone.from_preset(tmp_path).predict(TEXTS)
        clf = zoohub.TextClassifier.from_preset(tmp_path, num_classes=2, labels=["original", "replaced"])
    np.testing.assert_allclose(hidden[mask], out.hidden_states[-1].numpy()[mask], atol=1e-4, rtol=0)
    assert "classifier.out_proj.weight" in clf.load_report.new_tensors
    assert any(n.startswith("discriminator_predictions.") for n in clf.load_report.unused_tensors)
    saved = clf.save_to_preset(tmp_path / "clf")
    reloaded = transformers.ElectraForSequenceClassification.from_pretrained(saved).eval()
    ref, _ = reference_outputs(reloaded, transformers.AutoTokenizer.from_pretrained(saved), TEXTS,
                               task="text_classifier", model_type="electra")
    np.testing.assert_allclose(clf.logits(TEXTS), ref, atol=1e-4, rtol=0)


def test_mpnet_sentence_embedder_mean_pools_and_normalises(encoder_checkpoints, tmp_path):
    import shutil

    folder, ref_model, tokenizer = encoder_checkpoints[("mpnet", "backbone")]
    shutil.copytree(folder, tmp_path / "st")
    st = tmp_path / "st"
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 48, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    with using("numpy"):
        ours = zoohub.TextEmbedder.from_preset(st).predict(TEXTS)
    hidden, mask = reference_outputs(ref_model, tokenizer, TEXTS, model_type="mpnet")
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(ours, mean / np.linalg.norm(mean, axis=-1, keepdims=True), atol=1e-5)


BASE = {"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3,
        "intermediate_size": 80}


@pytest.mark.parametrize("model_type,key,value", [
    ("mpnet", "relative_attention_num_buckets", 16),       # transformers would index past the table
    ("albert", "position_embedding_type", "relative_key"),
    ("albert", "num_hidden_groups", 0),
    ("electra", "position_embedding_type", "relative_key_query"),
    ("electra", "is_decoder", True),
    ("electra", "add_cross_attention", True),
])
def test_unsupported_configs_are_refused_by_name(model_type, key, value):
    with pytest.raises(UnsupportedConfigError, match=key):
        get_family(model_type).config_class.from_hf({**BASE, key: value})
