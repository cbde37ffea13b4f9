"""GGUF files (llama.cpp's format) read as presets: config from the metadata, a `tokenizers` tokenizer
from the vocabulary, and tensors under transformers' names, dequantized one at a time.

The file is read with the `gguf` package (gguf-py, from llama.cpp), which memory-maps it; nothing in it
runs (a chat template in the metadata is rendered later in zoohub's sandbox, like any other).

Which architectures load, and how their metadata and tensors map to transformers', is the one table in
`zoohub.presets.gguf_archs`. Tensor names come from gguf-py's own HF -> GGUF map (`TensorNameMap`),
asked about each tensor the model expects, as transformers' GGUF loader does.

This module knows file formats and transformers' names, not zoohub's families: the task that loads
a file passes the tensor names its family expects (`GGUFFile.tensors`).

    >>> from zoohub.presets.gguf import ARCHITECTURES
    >>> ARCHITECTURES["qwen2"].model_type
    'qwen2'
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from zoohub.errors import CorruptFileError, MissingFileError, UnsupportedArchitectureError, UnsupportedConfigError
from zoohub.presets.gguf_archs import (
    ARCHITECTURES, DERIVED, FIXED_SHAPES, FIXES, HARMLESS, supported_architectures,
)


def _gguf():
    """gguf-py, an optional dependency (`pip install 'zoohub[gguf]'`): only GGUF loading needs it."""
    try:
        import gguf
    except ImportError:
        raise ImportError("loading a GGUF file needs the `gguf` package (llama.cpp's gguf-py): "
                          "pip install 'zoohub[gguf]'") from None
    return gguf


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
        >>> import tempfile, gguf, numpy as np
        >>> path = tempfile.mkdtemp() + "/tiny.gguf"        # a stand-in for e.g. "model-Q4_K_M.gguf"
        >>> writer = gguf.GGUFWriter(path, "llama")
        >>> writer.add_block_count(2)
        >>> writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
        >>> writer.write_header_to_file(); writer.write_kv_data_to_file()
        >>> writer.write_tensors_to_file(); writer.close()
        >>> f = GGUFFile(path)
        >>> f.field("general.architecture"), f.tensor_names(), f.quantization_types()
        ('llama', ['token_embd.weight'], ['F32'])
        >>> f.config()["model_type"], f.config()["num_hidden_layers"]
        ('llama', 2)
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
            elif short not in arch.same_as and short not in HARMLESS and short not in arch.ignored:
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
