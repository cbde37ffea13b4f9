"""Tiny random decoder checkpoints made by transformers in the test session, one per family.

Every config uses non-default values (eps, RoPE theta, soft-caps, a sliding window shorter than
the test sequences, GQA with 3 heads / 1 kv head), initializer_range 0.5 and its own seed, so a
wrong constant or a mis-wired tensor changes the logits visibly.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
              num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rms_norm_eps=3e-5,
              initializer_range=0.5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
WINDOW = 5  # shorter than the test prompts, so sliding-window masks matter

# model_type -> (transformers config class, kwargs, seed). Every registered decoder family must be here.
FAMILY_TABLE = {
    "gpt2": ("GPT2Config", dict(vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=3, n_inner=80, n_positions=128,
                                layer_norm_epsilon=3e-5, initializer_range=0.5, activation_function="gelu_new",
                                scale_attn_by_inverse_layer_idx=True, bos_token_id=1, eos_token_id=2,
                                pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), 11),
    "llama": ("LlamaConfig", dict(COMMON, tie_word_embeddings=False,
                                  rope_parameters=dict(rope_type="llama3", rope_theta=5000.0, factor=4.0,
                                                       low_freq_factor=1.0, high_freq_factor=4.0,
                                                       original_max_position_embeddings=16)), 12),
    "mistral": ("MistralConfig", dict(COMMON, sliding_window=WINDOW, rope_theta=777.0), 13),
    "qwen2": ("Qwen2Config", dict({k: v for k, v in COMMON.items() if k != "head_dim"}, use_sliding_window=True,
                                  sliding_window=WINDOW, max_window_layers=1, tie_word_embeddings=True,
                                  rope_theta=3000.0), 14),
    "qwen3": ("Qwen3Config", dict(COMMON, rope_theta=2500.0), 15),
    "gemma": ("GemmaConfig", dict(COMMON, rope_theta=900.0), 16),
    "gemma2": ("Gemma2Config", dict(COMMON, sliding_window=WINDOW, query_pre_attn_scalar=20,
                                    attn_logit_softcapping=7.0, final_logit_softcapping=9.0, rope_theta=1500.0), 17),
    "gemma3_text": ("Gemma3TextConfig", dict(COMMON, sliding_window=WINDOW, query_pre_attn_scalar=24,
                                             layer_types=["sliding_attention", "full_attention"],
                                             rope_parameters={"sliding_attention": dict(rope_type="default", rope_theta=300.0),
                                                              "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=20000.0)}), 18),
}
FAMILIES = list(FAMILY_TABLE)

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "hello world, how are you?",
             "once upon a time there was a tiny model", "zoohub generates text quickly", "The end.\n\nNew part"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] | trim }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(SENTENCES * 3, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build(model_type: str, root) -> str:
    cls_name, kwargs, seed = FAMILY_TABLE[model_type]
    config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    # Norm weights start at 0 or 1; perturb them so a wrong offset or a skipped norm shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    path = os.path.join(root, model_type)
    model.save_pretrained(path)
    tokenizer = make_tokenizer()
    assert len(tokenizer) <= VOCAB
    tokenizer.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, f)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    return {t: _build(t, str(root)) for t in FAMILIES}


@pytest.fixture(scope="session")
def torch_models(checkpoints):
    out = {}
    for t, path in checkpoints.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()
        out[t] = model
    return out


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
