"""GGUF files written by gguf-py from tiny transformers checkpoints (each family's recipe, at sizes a
GGUF can state), and transformers' own GGUF loading of the same files as the reference."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from tests.gguf.writer import Q, write_gguf  # noqa: E402
from tests.tiny import CHAT_TEMPLATE, SENTENCES, model_class, recipe_of  # noqa: E402

# What a GGUF can say about each family: transformers' GGUF loader reads no RoPE scaling, sliding-window
# switches or Gemma's query scalar, GPT-2's widths only at their defaults, and Qwen3's head size only at
# 128, so the tiny checkpoints use those values. Widths are multiples of 32 so every matrix fills blocks.
_GGUF_SIZES = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
FAMILIES = {
    # model_type: (config overrides, tokenizer, quantization type of the family sweep)
    "llama": (dict(_GGUF_SIZES, rope_parameters={"rope_type": "default", "rope_theta": 5000.0}), "spm", Q.Q8_0),
    "mistral": (dict(_GGUF_SIZES, sliding_window=None), "spm", Q.Q4_0),
    "qwen2": (dict(_GGUF_SIZES, use_sliding_window=False, sliding_window=None), "byte", Q.Q4_1),
    "qwen3": (dict(_GGUF_SIZES, head_dim=128), "byte", Q.Q5_0),
    "gemma2": (dict(_GGUF_SIZES, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0), "gemma", Q.Q5_1),
    "gemma3_text": (dict(_GGUF_SIZES, query_pre_attn_scalar=256, layer_types=None, rope_parameters=None,
                         sliding_window=4), "gemma", Q.F16),
    "gpt2": (dict(n_embd=64, n_head=4, n_inner=None, n_positions=1024, scale_attn_by_inverse_layer_idx=False),
             "byte", Q.BF16),
    "phi3": (dict(_GGUF_SIZES, rope_parameters={"rope_type": "default", "rope_theta": 700.0}, partial_rotary_factor=None,
                  sliding_window=None, original_max_position_embeddings=None), "spm", Q.Q8_0),
    "starcoder2": (dict(_GGUF_SIZES, sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                   "byte", Q.Q4_0),
    "stablelm": (dict(_GGUF_SIZES, qk_layernorm=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                       "partial_rotary_factor": 0.25}), "byte", Q.Q4_1),
    # transformers reads no Falcon width or epsilon from GGUF: 4 x width and 1e-5
    "falcon": (dict(hidden_size=64, num_attention_heads=4, ffn_hidden_size=None, layer_norm_epsilon=1e-5,
                    tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
               "byte", Q.Q5_0),
    "bloom": (dict(hidden_size=64, n_head=4, apply_residual_connection_post_layernorm=None), "byte", Q.Q8_0),
    # transformers' GGUF loader reads no expert widths: they stay at Qwen3-MoE's / Qwen2-MoE's defaults
    "qwen3_moe": (dict(_GGUF_SIZES, moe_intermediate_size=None, use_sliding_window=None, sliding_window=None),
                  "byte", Q.Q8_0),
    "qwen2_moe": (dict(_GGUF_SIZES, moe_intermediate_size=None, shared_expert_intermediate_size=None,
                       use_sliding_window=None, sliding_window=None, max_window_layers=None), "byte", Q.F16),
}
# The quantization sweep: one Llama whose rows hold whole 256-element super-blocks.
SWEEP_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
SWEEP = ("llama", dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 5000.0}))


def _spm(specials: list[str], bos: str, eos: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(SENTENCES * 3, trainers.BpeTrainer(vocab_size=97, special_tokens=specials,
                                                               show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                                pad_token="<pad>", unk_token="<unk>")


def _byte():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 3, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<|endoftext|>", "<|pad|>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>", pad_token="<|pad|>")


TOKENIZERS = {
    "spm": lambda: _spm(["<pad>", "<s>", "</s>", "<unk>"], "<s>", "</s>"),
    "gemma": lambda: _spm(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "<bos>", "<eos>"),
    "byte": _byte,
}


def build_checkpoint(model_type: str, overrides: dict, tokenizer: str, folder: Path):
    """A tiny transformers checkpoint of the family's recipe with `overrides` (None removes a key);
    the vocabulary is the tokenizer's, so the file's token list and the embedding rows agree."""
    recipe = recipe_of(model_type)
    tok = TOKENIZERS[tokenizer]()
    tok.chat_template = CHAT_TEMPLATE
    kwargs = {k: v for k, v in {**recipe.kwargs, **overrides}.items() if v is not None}
    kwargs.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    config = getattr(transformers, recipe.config)(**kwargs)
    torch.manual_seed(recipe.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_class(model_type, "causal_lm")(config).float().eval()
    with torch.no_grad():  # norm scales away from 1 (or 0), so a skipped or offset norm shows
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


class GGUFFiles:
    """{(model_type, qtype): (path, transformers model loaded from the GGUF)}, built on first use."""

    def __init__(self, root: Path):
        self.root, self._checkpoints, self._files = root, {}, {}

    def checkpoint(self, model_type: str, overrides: dict, tokenizer: str):
        key = (model_type, json.dumps(overrides, sort_keys=True))
        if key not in self._checkpoints:
            folder = self.root / f"hf-{model_type}-{len(self._checkpoints)}"
            self._checkpoints[key] = (folder, build_checkpoint(model_type, overrides, tokenizer, folder))
        return self._checkpoints[key]

    def __call__(self, model_type: str, qtype=None, *, sweep: bool = False):
        overrides, tokenizer, default = (SWEEP[1], "spm", None) if sweep else FAMILIES[model_type]
        qtype = default if qtype is None else qtype
        key = (model_type, qtype, sweep)
        if key not in self._files:
            folder, original = self.checkpoint(model_type, overrides, tokenizer)
            path = write_gguf(folder, self.root / f"{model_type}-{'sweep-' if sweep else ''}{qtype.name}.gguf", qtype,
                              metadata={"tokenizer.chat_template": CHAT_TEMPLATE})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.root), gguf_file=path.name, dtype=torch.float32).eval()
            self._files[key] = (path, reference, original)
        return self._files[key]

    def tokenizer(self, path: Path):
        return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory):
    return GGUFFiles(tmp_path_factory.mktemp("gguf"))


def token_batch(vocab: int, seed: int = 0, lengths=(11, 7)):
    """Left-padded ids and mask (pad id 0)."""
    rng = np.random.default_rng(seed)
    t = max(lengths)
    ids = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = rng.integers(3, vocab, n)
        mask[i, t - n:] = 1
    return ids, mask


def torch_logits(model, ids, mask) -> np.ndarray:
    pos = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(pos)).logits.numpy()
