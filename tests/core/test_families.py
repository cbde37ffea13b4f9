"""Generated from the family table: every registered family has a tiny recipe, is covered by the
parity suites, and its declared LoRA targets and tensor-parallel rules work against the reference."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.backbones import get_family
from zoohub.backend import using
from zoohub.presets.weights import flatten, unflatten

from tests.tiny import ALL_FAMILIES, ENCODER_TEXTS, families_with, model_class, primary_task, recipe_of

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = str(Path(__file__).resolve().parents[2])
TASK_CLASSES = {"causal_lm": zoohub.CausalLM, "text_classifier": zoohub.TextClassifier,
                "image_classifier": zoohub.ImageClassifier, "seq2seq_lm": zoohub.Seq2SeqLM}
# What the parity suites parametrize over (tests/decoder, tests/encoder, tests/vision).
COVERED = {"causal_lm": families_with("causal_lm"), "image_classifier": families_with("image_classifier"),
           "seq2seq_lm": families_with("seq2seq_lm"),  # tests/seq2seq
           "text": [t for t in families_with("text_classifier", "masked_lm") if get_family(t).input_kind == "text"]}


@pytest.mark.parametrize("model_type", ALL_FAMILIES)
def test_family_has_a_recipe_transformers_accepts(model_type):
    recipe = recipe_of(model_type)  # fails naming the family when it has none
    config = getattr(transformers, recipe.config)(**recipe.kwargs)
    assert config.model_type == model_type
    # the config transformers writes for it is read without an unknown-key error
    get_family(model_type).config_class.from_hf(config.to_dict())


def test_a_family_without_a_recipe_fails_the_suite_by_name(monkeypatch):
    import dataclasses
    import importlib

    from zoohub.backbones import FAMILY_MODULES

    module = importlib.import_module(FAMILY_MODULES["qwen3"])
    monkeypatch.setitem(module.FAMILIES, "qwen3", dataclasses.replace(module.FAMILIES["qwen3"], recipe=None))
    with pytest.raises(pytest.fail.Exception, match="family 'qwen3' has no tiny-checkpoint recipe"):
        recipe_of("qwen3")


def test_every_family_is_in_a_parity_suite():
    covered = set().union(*COVERED.values())
    assert covered == set(ALL_FAMILIES), f"not covered by any parity suite: {sorted(set(ALL_FAMILIES) - covered)}"


def _inputs(model_type: str, preprocessor):
    """(our task's input, transformers' keyword arguments) for the family's primary task."""
    task = primary_task(model_type)
    if task == "causal_lm":
        ids = np.array([[1, 5, 9, 14, 22, 7, 3], [2, 8, 40, 11, 6, 17, 90]], np.int32)
        return {"input_ids": ids}, {"input_ids": torch.from_numpy(ids.astype(np.int64))}
    if task == "seq2seq_lm":
        ids, dec = SEQ2SEQ_INPUTS
        ours = {"input_ids": ids, "decoder_input_ids": dec}
        return ours, {k: torch.from_numpy(v.astype(np.int64)) for k, v in ours.items()}
    if task == "image_classifier":
        images = [np.random.default_rng(i).integers(0, 256, (20, 23, 3), dtype=np.uint8) for i in range(3)]
        pixels = preprocessor(images=images, return_tensors="pt")["pixel_values"]
        return images, {"pixel_values": pixels}
    enc = preprocessor(ENCODER_TEXTS, padding=True, return_tensors="pt")
    if not get_family(model_type).token_types:
        enc.pop("token_type_ids", None)
    return ENCODER_TEXTS, dict(enc)


@pytest.mark.parametrize("model_type", ALL_FAMILIES)
def test_default_lora_targets_give_a_peft_adapter_and_a_merged_checkpoint(tiny, model_type, tmp_path):
    from peft import PeftModel

    task = primary_task(model_type)
    folder, _, preprocessor = tiny(model_type, task)
    with using("numpy"):
        model = TASK_CLASSES[task].from_preset(folder)
    ours_in, ref_in = _inputs(model_type, preprocessor)
    base = model.logits(ours_in)
    adapted = model.enable_lora(rank=4, alpha=8)
    targets = get_family(model_type).lora_targets
    assert adapted and all(name.rsplit(".", 1)[-1] in targets for name in adapted)
    # B starts at zero (a no-op); give it values so the adapter changes the outputs
    rng = np.random.default_rng(0)
    flat = {k: (rng.normal(0, 0.3, v.shape).astype(v.dtype) if k.endswith("lora_B.weight") else v)
            for k, v in flatten(model.params).items()}
    model.params = unflatten(flat)
    ours = model.logits(ours_in)
    assert np.abs(ours - base).max() > 1e-3

    model.save_lora(tmp_path / "adapter")
    reference = PeftModel.from_pretrained(model_class(model_type, task).from_pretrained(folder), tmp_path / "adapter")
    with torch.no_grad():
        ref = reference.eval()(**ref_in).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)

    merged = model.save_to_preset(tmp_path / "merged")
    with torch.no_grad():
        ref = model_class(model_type, task).from_pretrained(merged).eval()(**ref_in).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


SEQ2SEQ_INPUTS = (np.array([[5, 9, 14, 22, 7, 1], [8, 40, 11, 6, 17, 1]], np.int32), np.array([[0, 4, 9], [0, 12, 3]], np.int32))

SHARDED = """
import json, sys
import numpy as np
import zoohub
from zoohub.backend.sharding import make_mesh
from zoohub.presets.weights import flatten

out = {}
for model_type, task, folder, target in json.loads(sys.argv[1]):
    cls = {"causal_lm": zoohub.CausalLM, "text_classifier": zoohub.TextClassifier,
           "image_classifier": zoohub.ImageClassifier, "seq2seq_lm": zoohub.Seq2SeqLM}[task]
    if task == "seq2seq_lm":
        x = {"input_ids": np.array([[5, 9, 14, 22, 7, 1], [8, 40, 11, 6, 17, 1]], np.int32),
             "decoder_input_ids": np.array([[0, 4, 9], [0, 12, 3]], np.int32)}
    elif task == "causal_lm":
        x = {"input_ids": np.array([[1, 5, 9, 14, 22, 7, 3], [2, 8, 40, 11, 6, 17, 90]], np.int32)}
    elif task == "image_classifier":
        x = [np.random.default_rng(i).integers(0, 256, (20, 23, 3), dtype=np.uint8) for i in range(4)]
    else:
        x = ["the great film", "paris is the capital of france", "awful movie", "a city"]
    with zoohub.backend.using("numpy"):  # the one-device reference, with nothing to compile
        plain = cls.from_preset(folder).logits(x)
    sharded = cls.from_preset(folder, mesh=make_mesh(data=2, model=4))
    split = sorted(k for k, v in flatten(sharded.params).items() if "model" in tuple(v.sharding.spec))
    out[model_type] = {"diff": float(np.abs(sharded.logits(x) - plain).max()), "scale": float(np.abs(plain).max()),
                       "split": split, "target_split": any("." + target + "." in k for k in split)}
print(json.dumps(out))
"""


def test_tensor_parallel_rules_of_every_family_match_one_device(tiny):
    """One process with 8 simulated devices loads every family's primary task on a 2 x 4 mesh."""
    cases = [(t, primary_task(t), str(tiny.folder(t, primary_task(t))), get_family(t).lora_targets[0])
             for t in ALL_FAMILIES]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "ZOOHUB_BACKEND": "jax"}
    run = subprocess.run([sys.executable, "-c", SHARDED, json.dumps(cases)], capture_output=True, text=True,
                         env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for model_type in ALL_FAMILIES:
        r = result[model_type]
        assert r["target_split"], f"{model_type}: its attention projections are not split over 'model': {r['split']}"
        assert r["diff"] <= 1e-5 * max(1.0, r["scale"]), (model_type, r["diff"])
