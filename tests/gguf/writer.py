"""Test-side HF checkpoint -> GGUF writer, doing what llama.cpp's `convert_hf_to_gguf.py` does for the
families under test: names through gguf-py's `TensorNameMap`, Llama's q/k row permutation, Gemma's
`1 + w` norms stored whole, GPT-2's Conv1D weights transposed, metadata under llama.cpp's keys and the
vocabulary as `tokenizer.ggml.*` arrays.

It is the inverse of the loader under test, so the suite never trusts it alone: transformers' own
GGUF loader reads every file it writes, and in F32 must give the original checkpoint's logits.

Quantized tensors come from gguf-py's quantizers where it has one (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16).
For the K-quants gguf-py only dequantizes, so `k_quant_blocks` writes blocks from the format's
definition (ggml-common.h): random quants and sub-block scales under small float16 super-block scales.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

Q = gguf.GGMLQuantizationType

# model_type -> (gguf architecture, tokenizer model, pre-tokenizer)
ARCHS = {
    "llama": ("llama", "llama", None), "mistral": ("llama", "llama", None),
    "qwen2": ("qwen2", "gpt2", "qwen2"), "qwen3": ("qwen3", "gpt2", "qwen2"),
    "gemma2": ("gemma2", "llama", None), "gemma3_text": ("gemma3", "llama", None),
    "gpt2": ("gpt2", "gpt2", "gpt-2"), "phi3": ("phi3", "llama", None), "starcoder2": ("starcoder2", "gpt2", "starcoder"),
    "bloom": ("bloom", "gpt2", "bloom"), "qwen3_moe": ("qwen3moe", "gpt2", "qwen2"),
    "qwen2_moe": ("qwen2moe", "gpt2", "qwen2"), "stablelm": ("stablelm", "gpt2", "stablelm2"),
    "falcon": ("falcon", "gpt2", "falcon"),
}

# The K-quants' super-blocks of 256 (ggml-common.h): bytes per block, byte offsets of the float16 scales
# (d, and dmin where the type has one), and about how large |value| / d comes out of random quants and
# sub-scales, to pick d for weights of a given size.
K_QUANTS = {Q.Q2_K: (84, (80, 82), 12), Q.Q3_K: (110, (108,), 40), Q.Q4_K: (144, (0, 2), 230),
            Q.Q5_K: (176, (0, 2), 465), Q.Q6_K: (210, (208,), 1000)}


def k_quant_blocks(shape: tuple[int, int], qtype, rng: np.random.Generator, magnitude: float) -> np.ndarray:
    """uint8 [rows, bytes per row] of random, valid `qtype` blocks: every byte of quants and sub-scales
    is random; the float16 super-block scales are set so values come out about `magnitude` in size."""
    nbytes, scale_offsets, per_d = K_QUANTS[qtype]
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows, cols // 256, nbytes), dtype=np.uint8)
    for offset in scale_offsets:
        d = (magnitude / per_d * rng.uniform(0.5, 1.0, size=blocks.shape[:2])).astype(np.float16)
        blocks[:, :, offset:offset + 2] = d.view(np.uint8).reshape(*d.shape, 2)
    return blocks.reshape(rows, -1)


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    # llama.cpp's LlamaModel.permute: rows of each head from halves to interleaved pairs
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _store(name: str, w: np.ndarray, qtype, rng) -> tuple[np.ndarray, object]:
    """(array to write, raw dtype) for one tensor: 1-D tensors and rows that do not fill whole blocks
    stay float32, as llama.cpp keeps them."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == Q.F32 or w.ndim == 1:
        return w, None
    if qtype == Q.F16:
        return w.astype(np.float16), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if w.shape[-1] % block:
        return w, None
    if qtype in K_QUANTS:
        return k_quant_blocks(w.shape, qtype, rng, magnitude=float(np.abs(w).mean())), qtype
    return gguf.quants.quantize(w, qtype), qtype


def _tokenizer(writer: gguf.GGUFWriter, folder: Path, kind: str, pre: str | None) -> None:
    raw = json.loads((folder / "tokenizer.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    vocab = dict(raw["model"]["vocab"])
    for added in raw.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = {a["content"] for a in raw.get("added_tokens", []) if a.get("special")}
    unk = raw["model"].get("unk_token")
    types = [gguf.TokenType.UNKNOWN if t == unk else gguf.TokenType.CONTROL if t in specials
             else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["model"].get("merges", [])]
    writer.add_tokenizer_model(kind)
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("unk_token", writer.add_unk_token_id), ("pad_token", writer.add_pad_token_id)):
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if token in vocab:
            add(vocab[token])


def _stack_experts(tensors: dict) -> dict:
    """experts.{e}.{proj}.weight of each layer -> one experts.{proj}.weight [E, out, in], as llama.cpp stores them."""
    out, stacks = {}, {}
    for name, w in tensors.items():
        m = re.fullmatch(r"(.*\.experts)\.(\d+)\.(\w+\.weight)", name)
        if m:
            stacks.setdefault(f"{m[1]}.{m[3]}", {})[int(m[2])] = w
        else:
            out[name] = w
    out.update({name: np.stack([by[i] for i in range(len(by))]) for name, by in stacks.items()})
    return out


def write_gguf(folder: Path, path: Path, qtype=Q.F32, *, name: str | None = None, seed: int = 0,
               metadata: dict | None = None, extra_tensors: dict | None = None) -> Path:
    """Write the transformers checkpoint in `folder` (config.json, model.safetensors, tokenizer.json)
    as the GGUF file `path`, with matrices stored as `qtype`."""
    config = json.loads((folder / "config.json").read_text())
    model_type = config["model_type"]
    arch, tokenizer_kind, pre = ARCHS[model_type]
    tensors = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(seed)
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), n_layers)

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name or f"tiny-{model_type}")  # transformers turns a file named exactly "mistral" into a model it cannot load
    if model_type in ("gpt2", "bloom"):
        width = config.get("n_embd") or config["hidden_size"]
        heads = config["n_head"]
        if model_type == "gpt2":
            writer.add_context_length(config["n_positions"])
        writer.add_embedding_length(width)
        writer.add_feed_forward_length(config.get("n_inner") or 4 * width)
        writer.add_block_count(n_layers)
        writer.add_head_count(heads)
        writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    elif model_type == "falcon":
        heads = config["num_attention_heads"]
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config.get("ffn_hidden_size") or 4 * config["hidden_size"])
        writer.add_block_count(n_layers)
        writer.add_head_count(heads)
        writer.add_head_count_kv(1)
        writer.add_layer_norm_eps(config["layer_norm_epsilon"])
        writer.add_rope_freq_base((config.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    else:
        heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        rope = config.get("rope_parameters") or {}
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_block_count(n_layers)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv)
        if model_type in ("starcoder2", "stablelm"):
            writer.add_layer_norm_eps(config.get("norm_epsilon") or config["layer_norm_eps"])
        else:
            writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
        writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
        writer.add_vocab_size(config["vocab_size"])
        if arch in ("llama", "phi3"):
            writer.add_rope_dimension_count(head_dim)
        if arch == "stablelm":
            writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 0.25)))
        if arch in ("gemma2", "gemma3", "qwen3", "qwen3moe"):
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        if arch in ("gemma2", "gemma3") and config.get("sliding_window"):
            writer.add_sliding_window(config["sliding_window"])
        if arch == "gemma2":
            writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
            writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        if arch in ("qwen3moe", "qwen2moe"):
            writer.add_expert_count(config.get("num_experts") or config["num_local_experts"])
            writer.add_expert_used_count(config["num_experts_per_tok"])
            writer.add_expert_feed_forward_length(config["moe_intermediate_size"])
        if arch == "qwen2moe":
            writer.add_expert_shared_feed_forward_length(config["shared_expert_intermediate_size"])
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    _tokenizer(writer, folder, tokenizer_kind, pre)

    for hf_name, w in _stack_experts(tensors).items():
        base, _, suffix = hf_name.rpartition(".")
        gguf_name = names.get_name(base) or names.get_name(base.split(".", 1)[-1])  # BloomModel's own names too
        if gguf_name is None:
            raise KeyError(f"gguf-py has no name for {hf_name} in {arch}")
        if arch == "llama" and base.endswith(("q_proj", "k_proj")):
            w = _permute(w, heads, heads if base.endswith("q_proj") else kv)
        if arch in ("gemma2", "gemma3") and hf_name.endswith("norm.weight"):
            w = w + 1  # llama.cpp stores Gemma's norm scale as 1 + w
        if arch == "gpt2" and base.endswith(("c_attn", "c_proj", "c_fc")) and suffix == "weight":
            w = w.T  # Conv1D [in, out] -> [out, in]
        if arch == "bloom" and base.endswith("query_key_value"):
            w = w.reshape(heads, 3, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)  # per head -> q, k, v blocks
        if base.endswith("shared_expert_gate"):
            w = w.reshape(-1)  # llama.cpp stores the [1, D] gate as [D]
        data, raw = _store(hf_name, w, qtype, rng)
        if raw is None:
            writer.add_tensor(f"{gguf_name}.{suffix}", data)
        else:
            writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=raw)  # shape from the block bytes
    for name_, data in (extra_tensors or {}).items():
        writer.add_tensor(name_, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
