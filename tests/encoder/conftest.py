"""The encoder families' tiny checkpoints, one per (family, task), from each family's `recipe`
(odd, distinct sizes, a large init range, a non-default epsilon and a seed of its own)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.tiny import ENCODER_TEXTS, families_with  # noqa: E402
from zoohub.backbones import get_family  # noqa: E402

TEXTS = ENCODER_TEXTS
PAIRS = ["good", "the city is not bad", "a"]
# Every registered text family with an encoder head, and each of its tasks.
FAMILIES = [t for t in families_with("text_classifier", "masked_lm") if get_family(t).input_kind == "text"]
CASES = [(t, task) for t in FAMILIES for task in ("backbone",) + tuple(sorted(get_family(t).heads))]


@pytest.fixture(scope="session")
def encoder_checkpoints(tiny):
    """(model_type, task) -> (folder, transformers model in eval mode, tokenizer), built on first use."""
    return tiny


def reference_outputs(model, tokenizer, texts, pairs=None, task="backbone", model_type="bert"):
    """transformers' outputs for the same padded batch."""
    enc = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    if not get_family(model_type).token_types:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        out = model(**enc)
    if task == "question_answerer":  # start and end logits side by side, as our head computes them
        value = torch.stack([out.start_logits, out.end_logits], -1)
    else:
        value = out.last_hidden_state if task == "backbone" else out.logits
    return value.numpy(), enc["attention_mask"].numpy()
