"""The decoder families' tiny checkpoints (each family's `recipe`: non-default eps, RoPE theta,
soft-caps, a sliding window shorter than the test sequences, GQA 3/1, a large init range and a
seed of its own, so a wrong constant or a mis-wired tensor changes the logits visibly)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.tiny import families_with  # noqa: E402

VOCAB = 97
# Every registered family with a causal-LM head, from the family table.
FAMILIES = families_with("causal_lm")


@pytest.fixture(scope="session")
def checkpoints(tiny):
    return {t: str(tiny.folder(t, "causal_lm")) for t in FAMILIES}


@pytest.fixture(scope="session")
def torch_models(checkpoints):
    return {t: transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()
            for t, path in checkpoints.items()}


def left_padded_batch(seed: int = 0, lengths=(11, 7, 3)):
    """input_ids, attention_mask, position_ids for a left-padded batch (pad id 0)."""
    rng = np.random.default_rng(seed)
    t = max(lengths)
    ids = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = rng.integers(3, VOCAB, n)
        mask[i, t - n:] = 1
    pos = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)
    return ids, mask, pos


def torch_logits(model, ids, mask, pos) -> np.ndarray:
    """transformers' logits of a left-padded batch (see `left_padded_batch`)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(pos)).logits.numpy()


def assert_greedy_matches(lm, model) -> None:
    """Greedy decoding of a left-padded batch through the KV cache gives transformers' tokens (eos 2),
    over a run long enough to cross several cache slots."""
    from zoohub.tasks.generation import trim_row

    ids, mask, _ = left_padded_batch(seed=1, lengths=(9, 6, 4))
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pad_token_id=0,
                             eos_token_id=2, max_new_tokens=16, do_sample=False).numpy()[:, ids.shape[1]:]
    expected = [trim_row(row, [2]) for row in out]
    assert lm.generate_tokens({"input_ids": ids, "attention_mask": mask}, max_new_tokens=16) == expected
    assert max(map(len, expected)) >= 8


def assert_saved_loads_in_transformers(lm, model, folder) -> None:
    """`lm.save_to_preset(folder)` loads in transformers with the reference model's logits."""
    saved = transformers.AutoModelForCausalLM.from_pretrained(lm.save_to_preset(folder),
                                                              attn_implementation="eager").float().eval()
    ids, mask, pos = left_padded_batch(seed=4)
    assert np.abs(torch_logits(saved, ids, mask, pos) - torch_logits(model, ids, mask, pos))[mask == 1].max() <= 1e-6
