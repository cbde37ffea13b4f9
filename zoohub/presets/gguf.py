"""GGUF files (llama.cpp's format) read as presets: config from the metadata, a `tokenizers` tokenizer
from the vocabulary, and tensors under transformers' names, dequantized one at a time.

The file is read with the `gguf` package (gguf-py, from llama.cpp), which memory-maps it; nothing in it
runs (a chat template in the metadata is rendered later in zoohub's sandbox, like any other).

What zoohub knows about GGUF is the one table `ARCHITECTURES`, keyed by the file's `general.architecture`,
because that key is all a GGUF says about what model it holds: its transformers `model_type`, which
metadata keys become which config keys, which keys change the math at values zoohub refuses, and the
named tensor fixes that undo what llama.cpp's converter did to the checkpoint (`FIXES`). Tensor names
come from gguf-py's own HF -> GGUF map (`TensorNameMap`), asked about each tensor the model expects, as
transformers' GGUF loader does. The table follows transformers' `integrations/ggml.py` and
`modeling_gguf_pytorch_utils.py`, so a file loads as transformers loads it.

This module knows file formats and transformers' names, not zoohub's families: the task that loads
a file passes the tensor names its family expects (`GGUFFile.tensors`).

    >>> from zoohub.presets.gguf import ARCHITECTURES
    >>> ARCHITECTURES["qwen2"].model_type
    'qwen2'
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoohub.errors import CorruptFileError, MissingFileError, UnsupportedArchitectureError, UnsupportedConfigError

def _gguf():
    """gguf-py, an optional dependency (`pip install 'zoohub[gguf]'`): only GGUF loading needs it."""
    try:
        import gguf
    except ImportError:
        raise ImportError("loading a GGUF file needs the `gguf` package (llama.cpp's gguf-py): "
                          "pip install 'zoohub[gguf]'") from None
    return gguf


# Config keys every architecture reads alike: `{arch}.<gguf key>` -> transformers key.
_DECODER = {
    "context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta", "vocab_size": "vocab_size",
}
# Keys llama.cpp writes that transformers' loader reads nowhere and that do not change the math.
_HARMLESS = {"vocab_size", "rope.dimension_count", "attention.key_length", "attention.value_length",
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


# ---- quantization types -----------------------------------------------------------------------------

def supported_types() -> list[str]:
    """GGML tensor types zoohub dequantizes: the float types and every block type gguf-py dequantizes."""
    quants = _gguf().quants
    return ["F32", "F16"] + sorted(t.name for t in quants._type_traits)  # gguf-py's registry of dequantizers


def _dequantize(tensor, where: str) -> np.ndarray:
    gguf = _gguf()

    kind = gguf.GGMLQuantizationType(tensor.tensor_type)
    if kind.name not in supported_types():
        raise UnsupportedConfigError(
            f"{where}: tensor {tensor.name!r} is stored as {kind.name}, which zoohub cannot dequantize "
            f"(supported: {', '.join(supported_types())}); re-quantize the file to one of these")
    values = gguf.quants.dequantize(tensor.data, kind)
    # gguf-py orders dimensions fastest first; the array it reads is already in torch's order.
    shape = tuple(int(s) for s in reversed(tensor.shape))
    return np.asarray(values, dtype=np.float32).reshape(shape)


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


# ---- the file -----------------------------------------------------------------------------------------

_EXPERT = re.compile(r"(?P<experts>.*\.experts)\.(?P<index>\d+)\.(?P<proj>\w+)")


class GGUFTensor:
    """One tensor of the file under its transformers name, dequantized (and fixed) when read: an array-like
    with `shape`, `dtype` and `__array__`, so loading holds at most a tensor's float copy at a time.
    `expert` picks one expert of llama.cpp's stacked [E, out, in] expert tensors."""

    def __init__(self, file: "GGUFFile", tensor, hf_name: str, expert: int | None = None):
        self.file, self.tensor, self.name, self.expert = file, tensor, hf_name, expert
        shape = tuple(int(s) for s in reversed(tensor.shape))
        for fix in file.arch.fixes:
            shape = FIXED_SHAPES.get(fix, lambda name, shape: shape)(tensor.name, shape)
        self.shape = shape if expert is None else shape[1:]
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __array__(self, dtype=None, copy=None):
        w = self.file.read(self.tensor) if self.expert is None else self.file.read_expert(self.tensor, self.expert)
        return w if dtype is None else w.astype(dtype)

    def __getitem__(self, index):
        return np.asarray(self)[index]


class GGUFFile:
    """A GGUF file opened for loading (memory-mapped by gguf-py; nothing is read until asked).

    Example:
        >>> f = GGUFFile("model-Q4_K_M.gguf")          # doctest: +SKIP
        >>> f.config()["model_type"]                     # doctest: +SKIP
        'llama'
    """

    def __init__(self, path: str | os.PathLike):
        gguf = _gguf()

        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"GGUF file {self.path} is missing")
        try:
            self.reader = gguf.GGUFReader(self.path, "r")
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as e:
            raise CorruptFileError(f"{self.path} is not a readable GGUF file ({type(e).__name__}: {e}); "
                                   "re-download it") from None
        size = self.path.stat().st_size
        for t in self.reader.tensors:  # gguf-py maps views past a truncated end without complaint
            if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
                raise CorruptFileError(f"{self.path}: tensor {t.name!r} ends past the end of the file "
                                       f"({size} bytes); the file is truncated, re-download it")
        name = self.field("general.architecture")
        if name not in ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"{self.path}: GGUF architecture {name!r} is not supported; supported: "
                f"{', '.join(supported_architectures())}")
        self.arch_name, self.arch = name, ARCHITECTURES[name]
        self._config: dict | None = None
        self._experts: dict = {}  # stacked expert tensors being split: name -> [float32 array, experts left]

    def field(self, key: str, default=None):
        """A metadata value as Python data (str, int, float, bool, or a list of them)."""
        f = self.reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"{self.path}: metadata {key!r} cannot be read ({e}); re-download the file") from None

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.reader.tensors]

    # ---- config ------------------------------------------------------------------------------------
    def config(self) -> dict:
        """config.json as transformers' GGUF loader builds it from this file's metadata."""
        if self._config is not None:
            return self._config
        arch, prefix = self.arch, self.arch_name + "."
        out: dict = {"model_type": arch.model_type, **arch.defaults}
        for key in self.reader.fields:
            if not key.startswith(prefix):
                continue
            short = key[len(prefix):]
            if short in arch.refused:
                allowed, why = arch.refused[short]
                if self.field(key) not in allowed:
                    raise UnsupportedConfigError(f"{self.path}: {key}={self.field(key)!r}: {why}; zoohub would "
                                                 "compute another model than the file describes")
                continue
            if short in arch.config:
                out[arch.config[short]] = self.field(key)
            elif short not in arch.same_as and short not in _HARMLESS and short not in arch.ignored:
                raise UnsupportedConfigError(
                    f"{self.path}: GGUF key {key}={self.field(key)!r} is not one zoohub reads for {self.arch_name} "
                    f"(it reads: {', '.join(sorted(arch.config))}); it may change the model, so it is not ignored")
        for short, target in arch.same_as.items():
            value = self.field(prefix + short)
            if value is not None and value != out.get(target):
                raise UnsupportedConfigError(f"{self.path}: {prefix}{short}={value} differs from {target}="
                                             f"{out.get(target)}; zoohub cannot load such a file")
        if "rope_theta" in out and arch.model_type == "gemma3_text":
            # Gemma 3: the file's base is the global layers'; local layers keep transformers' 10000.
            theta = out.pop("rope_theta")
            out["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": theta},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
        if arch.derive is not None:
            DERIVED[arch.derive](self, out)
        tokens = self.field("tokenizer.ggml.tokens")
        if "vocab_size" not in out and tokens is not None:
            out["vocab_size"] = len(tokens)
        for gguf_key, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                              ("padding_token_id", "pad_token_id")):
            value = self.field(f"tokenizer.ggml.{gguf_key}")
            if value is not None:
                out[key] = value
        # llama.cpp writes the output projection only when it is not the embedding table.
        out["tie_word_embeddings"] = arch.tied if arch.tied is not None else "output.weight" not in self.tensor_names()
        self._config = out
        return out

    # ---- tensors -----------------------------------------------------------------------------------
    def read(self, tensor) -> np.ndarray:
        """A tensor dequantized to float32, with the architecture's fixes applied."""
        w = _dequantize(tensor, str(self.path))
        for fix in self.arch.fixes:
            w = FIXES[fix](tensor.name, w, self.config())
        return w

    def read_expert(self, tensor, expert: int) -> np.ndarray:
        """One expert of a stacked expert tensor. The stack is dequantized once and kept until each of its
        experts has been read (loading reads them expert by expert, across layers)."""
        if tensor.name not in self._experts:
            self._experts[tensor.name] = [self.read(tensor), int(tensor.shape[-1])]
        entry = self._experts[tensor.name]
        entry[1] -= 1
        if entry[1] == 0:
            del self._experts[tensor.name]
        return np.array(entry[0][expert])

    def tensors(self, expected: Iterable[str]) -> dict[str, GGUFTensor]:
        """The file's tensors under the transformers names `expected` (the model's checkpoint names,
        prefix included), read lazily. A file tensor none of them maps to is an error naming it."""
        gguf = _gguf()

        arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch_name)
        name_map = gguf.get_tensor_name_map(arch, int(self.config().get("num_hidden_layers")
                                                       or self.config().get("n_layer") or 0))
        to_hf: dict[str, str] = {}
        experts: dict[str, list[tuple[int, str]]] = {}
        for hf_name in expected:
            base, _, suffix = hf_name.rpartition(".")
            match = _EXPERT.fullmatch(base)
            if match:  # experts.3.gate_proj -> the layer's stacked experts.gate_proj
                base = f"{match['experts']}.{match['proj']}"
            gguf_name = name_map.get_name(base)
            if gguf_name is None and "." in base:
                # transformers also maps the bare backbone's names (BLOOM's `word_embeddings_layernorm`)
                gguf_name = name_map.get_name(base.split(".", 1)[1])
            if gguf_name is None:
                continue
            if match:
                experts.setdefault(f"{gguf_name}.{suffix}", []).append((int(match["index"]), hf_name))
            else:
                to_hf[f"{gguf_name}.{suffix}"] = hf_name
        out, supported = {}, set(supported_types())
        for t in self.reader.tensors:
            kind = gguf.GGMLQuantizationType(t.tensor_type).name
            if kind not in supported:  # before anything is read, not halfway through loading
                raise UnsupportedConfigError(
                    f"{self.path}: tensor {t.name!r} is stored as {kind}, which zoohub cannot dequantize "
                    f"(supported: {', '.join(sorted(supported))}); re-quantize the file to one of these")
            if t.name in experts:
                for index, hf_name in experts[t.name]:
                    out[hf_name] = GGUFTensor(self, t, hf_name, expert=index)
                continue
            if t.name not in to_hf:
                raise UnsupportedConfigError(
                    f"{self.path}: tensor {t.name!r} has no place in a {self.arch.model_type} model with this "
                    "metadata; zoohub cannot load it")
            out[to_hf[t.name]] = GGUFTensor(self, t, to_hf[t.name])
        return out

    # ---- tokenizer ---------------------------------------------------------------------------------
    def tokenizer(self):
        """(tokenizers.Tokenizer, tokenizer_config dict) from the vocabulary, as transformers' GGUF
        conversion builds them (`integrations/gguf/gguf_tokenizer_mapping.py`)."""
        from zoohub.presets import gguf_tokenizer

        return gguf_tokenizer.build(self)

    def quantization_types(self) -> list[str]:
        gguf = _gguf()

        return sorted({gguf.GGMLQuantizationType(t.tensor_type).name for t in self.reader.tensors})


def find_gguf(folder: Path, gguf_file: str | None) -> Path | None:
    """The GGUF file a folder's preset is: `gguf_file` inside it, or the only .gguf of a folder without
    config.json; None for a transformers checkpoint folder."""
    from zoohub.hub import confine

    if gguf_file is not None:
        if not confine.is_file(folder, gguf_file):
            raise MissingFileError(f"{folder} has no GGUF file {gguf_file!r}")
        return folder / gguf_file  # checked inside the folder; the name (not a cache blob's) is kept
    if (folder / "config.json").exists():
        return None
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(".gguf")) if folder.is_dir() else []
    if len(found) == 1 and confine.is_file(folder, found[0]):
        return folder / found[0]
    if len(found) > 1:
        raise MissingFileError(f"{folder} holds {len(found)} GGUF files ({', '.join(found)}); pick one with "
                               "gguf_file=")
    return None
