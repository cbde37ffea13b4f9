"""The presets bundled in the package (zoohub/data, rows with `bundled=`): each loads by name with no network,
is a real transformers checkpoint (transformers loads the same folder and gives the same logits), tokenizes
as transformers does, and stays small enough to ship."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import zoohub
from zoohub.backend import using
from zoohub.presets import registry
from zoohub.presets.resolve import resolve_preset

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

DATA = Path(zoohub.__file__).resolve().parent / "data"
BUNDLED = sorted(p.name for p in registry.all_presets() if p.bundled)
TASKS = {  # registry task -> (zoohub class, transformers auto class)
    "text_classifier": (zoohub.TextClassifier, transformers.AutoModelForSequenceClassification),
    "masked_lm": (zoohub.MaskedLM, transformers.AutoModelForMaskedLM),
    "causal_lm": (zoohub.CausalLM, transformers.AutoModelForCausalLM),
    "image_classifier": (zoohub.ImageClassifier, transformers.AutoModelForImageClassification),
}
# Words from the bundled sentences, words the tokenizers never saw, and (for byte-level BPE) non-ASCII text.
TEXTS = ["great film", "what a waste of time, honestly!", "zebras quantum café ✓"]


def test_the_toys_are_registered_and_bundled():
    assert {"toy_llama", "toy_vit", "toy_bert_mlm", "starter_bert_tiny_en"} <= set(BUNDLED)
    for name in BUNDLED:
        row = registry.get_preset(name)
        folder = DATA / row.bundled
        assert (folder / "zoohub.json").is_file() and (folder / "model.safetensors").is_file(), folder
        assert row.handle == f"local://zoohub/{row.bundled}" and row.license == "apache-2.0", row
        # Honest about being random toys, in the row and the model card.
        assert "andomly initialised" in row.description, row.description
        assert "random-init" in (folder / "README.md").read_text()
        if name.startswith("toy_"):
            size = sum(p.stat().st_size for p in folder.iterdir())
            assert size < 300_000, f"{folder}: {size:,} bytes"


@pytest.fixture(scope="module")
def loaded():
    """name -> (zoohub model on numpy, zoohub model on jax, transformers model, folder)."""
    out = {}
    for name in BUNDLED:
        row = registry.get_preset(name)
        ours, theirs = TASKS[row.task]
        with using("numpy"):
            on_numpy = ours.from_preset(name)
        with using("jax"):
            on_jax = ours.from_preset(name)
        folder = resolve_preset(name)
        out[name] = on_numpy, on_jax, theirs.from_pretrained(folder).float().eval(), folder
    return out


@pytest.mark.parametrize("name", BUNDLED)
def test_loads_with_the_registered_parameter_count(loaded, name):
    on_numpy, on_jax, reference, _ = loaded[name]
    row = registry.get_preset(name)
    assert on_numpy.num_params() == on_jax.num_params() == row.params
    assert sum(p.numel() for p in reference.parameters()) == row.params


@pytest.mark.parametrize("name", BUNDLED)
def test_same_logits_as_transformers(loaded, name):
    on_numpy, on_jax, reference, folder = loaded[name]
    task = registry.get_preset(name).task
    cases = []  # (our model, inputs, transformers' logits)
    if task == "image_classifier":
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
        pixels = transformers.AutoImageProcessor.from_pretrained(folder)(images, return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(on_numpy.preprocess(images)["pixel_values"], pixels, atol=1e-5)
        with torch.no_grad():
            expected = reference(pixel_values=torch.from_numpy(pixels)).logits.numpy()
        cases += [(model, {"pixel_values": pixels}, expected) for model in (on_numpy, on_jax)]
    else:
        # One text at a time, so there is no padding to line up; jax on one of them (each length compiles).
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        for i, text in enumerate(TEXTS):
            ids = tokenizer(text, return_tensors="np")
            with torch.no_grad():
                expected = reference(**{k: torch.from_numpy(v) for k, v in ids.items()}).logits.numpy()
            inputs = {k: ids[k] for k in ("input_ids", "attention_mask")}
            cases += [(model, inputs, expected) for model in ((on_numpy, on_jax) if i == 1 else (on_numpy,))]
    for model, inputs, expected in cases:
        got = model.predict(inputs) if task == "masked_lm" else model.logits(inputs)
        assert got.shape == expected.shape, (name, model.backend)
        assert np.abs(got - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0), (name, model.backend)


@pytest.mark.parametrize("name", [n for n in BUNDLED if registry.get_preset(n).task != "image_classifier"])
def test_tokenizes_as_transformers(loaded, name):
    model, _, _, folder = loaded[name]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if registry.get_preset(name).task == "causal_lm":
        ours = model.preprocessor.encode(TEXTS)
    else:
        ours = model.tokenizer.encode_batch(TEXTS, max_length=None)[0]
    assert [list(ids) for ids in ours] == [tokenizer(t)["input_ids"] for t in TEXTS]


def test_toy_llama_generates_as_transformers_greedy(loaded):
    # numpy only: jax generation is checked against numpy by the generation tests, and compiling it costs seconds.
    on_numpy, _, reference, folder = loaded["toy_llama"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("the film was", return_tensors="pt")
    with torch.no_grad():
        out = reference.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    expected = out[: out.index(2) + 1] if 2 in out else out  # ours stops at (and keeps) the EOS token, id 2
    assert on_numpy.generate_tokens("the film was", max_new_tokens=8)[0] == expected
    # A chat template ships with it, so `chat` (and the server's chat endpoint) work offline.
    assert isinstance(on_numpy.chat([{"role": "user", "content": "Hi!"}], max_new_tokens=2), str)
