"""The encoder-decoder families' tiny checkpoints (every family with a "seq2seq_lm" head, from its
`Family.recipe`) and one task per (family, backend) for the session: jax compiles once per family."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.tiny import families_with  # noqa: E402

FAMILIES = families_with("seq2seq_lm")
SOURCES = ["the cat sat on the mat", "hello world, how are you?"]
TARGETS = ["a cat", "the world is great"]
NEW = 8  # max_new_tokens everywhere: compile time and run time stay small


@pytest.fixture(scope="session")
def seq2seq_models(tiny):
    """(model_type, backend) -> (Seq2SeqLM, transformers model, tokenizer), built on first use."""
    import zoohub
    from zoohub.backend import using

    built = {}

    def get(model_type: str, backend: str):
        if (model_type, backend) not in built:
            folder, model, tokenizer = tiny(model_type, "seq2seq_lm")
            with using(backend):
                built[model_type, backend] = (zoohub.Seq2SeqLM.from_preset(folder), model, tokenizer)
        return built[model_type, backend]

    return get


def reference_generate(model, tokenizer, texts, **kwargs) -> list[list[int]]:
    """transformers' new tokens per row (the decoder start dropped, padding after EOS dropped)."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=NEW, **kwargs)
    eos = model.generation_config.eos_token_id
    rows = []
    for row in out[:, 1:].tolist():
        kept = []
        for t in row:
            kept.append(t)
            if t == eos:
                break
        rows.append(kept)
    return rows
