"""What zoohub knows about GGUF architectures: the one table `ARCHITECTURES`, keyed by the file's
`general.architecture`, because that key is all a GGUF says about the model it holds. Each row gives the
transformers `model_type`, which metadata keys become which config keys, which keys change the math at
values zoohub refuses, config read off the tensors (`DERIVED`) and the named tensor fixes (`FIXES`) that
undo what llama.cpp's converter did. It follows transformers' `integrations/ggml.py` and
`modeling_gguf_pytorch_utils.py`, so a file loads as transformers loads it.

    >>> ARCHITECTURES["qwen3moe"].model_type
    'qwen3_moe'
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from zoohub.errors import UnsupportedConfigError

# Config keys every architecture reads alike: `{arch}.<gguf key>` -> transformers key.
_DECODER = {
    "context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta", "vocab_size": "vocab_size",
}
# Keys llama.cpp writes that transformers' loader reads nowhere and that do not change the math.
HARMLESS = {"vocab_size", "rope.dimension_count", "attention.key_length", "attention.value_length",
            "expert_count", "expert_used_count"}


@dataclass(frozen=True)
class Arch:
    """What one GGUF `general.architecture` is in transformers' terms."""

    model_type: str
    config: Mapping[str, str]
    """`{arch}.<key>` -> transformers config key."""
    fixes: tuple[str, ...] = ()
    """Names in `FIXES`, applied to each tensor after dequantizing."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Config keys a GGUF never states, at the value transformers' GGUF loader gives them."""
    same_as: Mapping[str, str] = field(default_factory=dict)
    """`{arch}.<key>` that must equal a config key (it is derived, not free): refused when it differs."""
    refused: Mapping[str, tuple] = field(default_factory=dict)
    """`{arch}.<key>` read only at values that change nothing -> (those values, why others are refused)."""
    ignored: frozenset = frozenset()
    """`{arch}.<key>` llama.cpp writes that this model has no use for."""
    derive: str | None = None
    """A name in `DERIVED`: config keys a GGUF states only through which tensors it holds."""
    tied: bool | None = None
    """The head is the embedding table whatever the file holds (transformers' rule for BLOOM); None: tied
    when the file has no `output.weight`."""


# transformers' GGUF loader drops RoPE scaling (and llama.cpp's llama3 `rope_freqs` tensor): a file that
# scales is refused rather than loaded as another model.
_ROPE_SCALING = {key: (("none", 1.0, 0), "RoPE scaling is not read from GGUF files")
                 for key in ("rope.scaling.type", "rope.scaling.factor")}

ARCHITECTURES: dict[str, Arch] = {
    # llama.cpp writes Llama and Mistral checkpoints alike as "llama" (no sliding window survives), with
    # the q/k rows permuted for its interleaved RoPE.
    "llama": Arch("llama", {**_DECODER, "rope.dimension_count": "head_dim"}, fixes=("unpermute_qk",),
                  refused=_ROPE_SCALING),
    "qwen2": Arch("qwen2", _DECODER, refused=_ROPE_SCALING),
    "qwen3": Arch("qwen3", {**_DECODER, "attention.key_length": "head_dim"}, same_as={"attention.value_length": "head_dim"},
                  refused=_ROPE_SCALING),
    # llama.cpp stores Gemma's RMSNorm scale as the 1 + w it multiplies by.
    "gemma2": Arch("gemma2", {**_DECODER, "attention.key_length": "head_dim", "attention.sliding_window": "sliding_window",
                              "attn_logit_softcapping": "attn_logit_softcapping",
                              "final_logit_softcapping": "final_logit_softcapping"},
                   fixes=("norm_minus_one",), same_as={"attention.value_length": "head_dim"}, refused=_ROPE_SCALING),
    "gemma3": Arch("gemma3_text", {**_DECODER, "attention.key_length": "head_dim",
                                   "attention.sliding_window": "sliding_window"},
                   fixes=("norm_minus_one",), same_as={"attention.value_length": "head_dim"}, refused=_ROPE_SCALING),
    # Phi-3 keeps its fused qkv_proj / gate_up_proj (llama.cpp's attn_qkv / ffn_up); the prefix space of its
    # sentencepiece vocabulary comes from a normalizer (gguf_tokenizer).
    "phi3": Arch("phi3", {**_DECODER, "attention.sliding_window": "sliding_window"}, refused=_ROPE_SCALING),
    "starcoder2": Arch("starcoder2", {**_DECODER, "attention.layer_norm_epsilon": "norm_epsilon"}, refused=_ROPE_SCALING),
    # BLOOM: llama.cpp regroups the fused q/k/v rows by kind (all q, then k, then v); transformers' are per head.
    "bloom": Arch("bloom", {"block_count": "n_layer", "embedding_length": "hidden_size", "attention.head_count": "n_head",
                            "vocab_size": "vocab_size", "attention.layer_norm_epsilon": "layer_norm_epsilon"},
                  fixes=("bloom_qkv",), tied=True,
                  ignored=frozenset({"feed_forward_length", "context_length"})),  # 4 x width MLP; ALiBi positions
    # MoE: llama.cpp stacks each layer's experts into one [E, out, in] tensor (ffn_*_exps), split per expert here.
    "qwen3moe": Arch("qwen3_moe", {**_DECODER, "attention.key_length": "head_dim", "expert_count": "num_experts",
                                   "expert_used_count": "num_experts_per_tok",
                                   "expert_feed_forward_length": "moe_intermediate_size"},
                     defaults={"norm_topk_prob": True},  # llama.cpp normalises the top-k weights (transformers too)
                     same_as={"attention.value_length": "head_dim"}, refused=_ROPE_SCALING),
    "qwen2moe": Arch("qwen2_moe", {**_DECODER, "expert_count": "num_experts", "expert_used_count": "num_experts_per_tok",
                                   "expert_feed_forward_length": "moe_intermediate_size",
                                   "expert_shared_feed_forward_length": "shared_expert_intermediate_size"},
                     fixes=("shared_gate_2d",), refused=_ROPE_SCALING),
    # StableLM: biases and the (non-)parallel residual are read off the tensors, as transformers does.
    "stablelm": Arch("stablelm", {**_DECODER, "attention.layer_norm_epsilon": "layer_norm_eps"}, derive="stablelm",
                     refused=_ROPE_SCALING),
    # Falcon: Falcon-7B's layout (one kv head, parallel attention, tied head). llama.cpp regroups the fused
    # q/k/v of the new decoder architecture, which transformers' loader does not undo: those are refused.
    "falcon": Arch("falcon", {"context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
                              "feed_forward_length": "ffn_hidden_size", "embedding_length": "hidden_size",
                              "attention.head_count": "num_attention_heads", "rope.freq_base": "rope_theta",
                              "attention.layer_norm_epsilon": "layer_norm_epsilon", "vocab_size": "vocab_size"},
                   derive="falcon", tied=True, ignored=frozenset({"attention.head_count_kv"}), refused=_ROPE_SCALING),
    # GPT-2's Conv1D weights are stored [out, in] in GGUF.
    "gpt2": Arch("gpt2", {"context_length": "n_positions", "embedding_length": "n_embd", "block_count": "n_layer",
                          "feed_forward_length": "n_inner", "attention.head_count": "n_head",
                          "attention.layer_norm_epsilon": "layer_norm_epsilon"}, fixes=("transpose_conv1d",)),
}

def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


# ---- per-architecture tensor fixes (inverse of llama.cpp's convert_hf_to_gguf.py) ----------------------

def _unpermute_qk(name: str, w: np.ndarray, config: Mapping) -> np.ndarray:
    """llama.cpp interleaves each head's rows for its RoPE; transformers rotates halves."""
    if ".attn_q." not in name and ".attn_k." not in name:
        return w
    heads = config["num_attention_heads"] if ".attn_q." in name else (
        config.get("num_key_value_heads") or config["num_attention_heads"])
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _norm_minus_one(name: str, w: np.ndarray, config: Mapping) -> np.ndarray:
    return w - 1 if name.endswith("norm.weight") else w


_CONV1D = ("attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight")


def _transpose_conv1d(name: str, w: np.ndarray, config: Mapping) -> np.ndarray:
    return np.ascontiguousarray(w.T) if name.endswith(_CONV1D) else w


def _bloom_qkv(name: str, w: np.ndarray, config: Mapping) -> np.ndarray:
    """[3, N, H, ...] (llama.cpp) -> [N, 3, H, ...] (transformers), for the fused weight and bias."""
    if ".attn_qkv." not in name:
        return w
    heads = config["n_head"]
    return np.ascontiguousarray(w.reshape(3, heads, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape))


def _shared_gate_2d(name: str, w: np.ndarray, config: Mapping) -> np.ndarray:
    return w.reshape(1, -1) if "ffn_gate_inp_shexp" in name else w  # stored [D]; transformers' Linear is [1, D]


def _stablelm_flags(file: "GGUFFile", out: dict) -> None:
    names = file.tensor_names()
    out["use_qkv_bias"] = any(n.endswith(("attn_q.bias", "attn_k.bias", "attn_v.bias")) for n in names)
    out["use_parallel_residual"] = not any(".ffn_norm." in n for n in names)
    if any(".attn_q_norm." in n for n in names):
        raise UnsupportedConfigError(f"{file.path}: per-head q/k LayerNorms (attn_q_norm) in a StableLM GGUF are "
                                     "not read (transformers' GGUF loader cannot place them either)")
    # the rotary width: transformers keeps StableLM's default quarter of each head
    width = file.field("stablelm.rope.dimension_count")
    head_dim = out["hidden_size"] // out["num_attention_heads"]
    if width is not None and width != int(head_dim * 0.25):
        raise UnsupportedConfigError(f"{file.path}: stablelm.rope.dimension_count={width}, but only a rotary "
                                     f"quarter of each head ({int(head_dim * 0.25)}) is read from GGUF")


def _falcon_layout(file: "GGUFFile", out: dict) -> None:
    kv = file.field("falcon.attention.head_count_kv", 1)
    if kv != 1:
        raise UnsupportedConfigError(f"{file.path}: falcon.attention.head_count_kv={kv}: only Falcon-7B's layout (one "
                                     "kv head) loads from GGUF; llama.cpp regroups the new decoder architecture's q/k/v")
    out.update(multi_query=True, new_decoder_architecture=False, parallel_attn=True, bias=False, alibi=False)


DERIVED = {"stablelm": _stablelm_flags, "falcon": _falcon_layout}

FIXES = {"unpermute_qk": _unpermute_qk, "norm_minus_one": _norm_minus_one, "transpose_conv1d": _transpose_conv1d,
         "bloom_qkv": _bloom_qkv, "shared_gate_2d": _shared_gate_2d}
# Fixes that change a tensor's shape: name -> (GGUF tensor name, shape) -> shape after the fix.
FIXED_SHAPES = {"transpose_conv1d": lambda name, shape: shape[::-1] if name.endswith(_CONV1D) else shape,
                "shared_gate_2d": lambda name, shape: (1, *shape) if "ffn_gate_inp_shexp" in name else shape}
