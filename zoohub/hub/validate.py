"""Checks on a preset folder before it is uploaded, at the file-format level (no model code).

    >>> from zoohub.presets.resolve import resolve_preset
    >>> validate_folder(resolve_preset("starter_bert_tiny_en"))   # the bundled starter's folder
    ['README.md', 'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'zoohub.json']
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO

from zoohub.errors import CorruptFileError, MissingFileError, UnsafeFormatError
from zoohub.hub import confine, integrity
from zoohub.hub.files import ADAPTER_WEIGHTS, INDEX, WEIGHTS, is_pickle, pooling_config, shard_names
from zoohub.hub.local import visible_files

_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2,
             "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
_MAX_HEADER = 100 << 20


def _tensor_entry_ok(info) -> bool:
    """A header entry has a dtype string, a shape of at most 64 sizes whose product numpy can hold, and
    data_offsets [begin, end] with 0 <= begin <= end."""
    def sizes(value) -> bool:
        return isinstance(value, list) and all(type(x) is int and x >= 0 for x in value)

    if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
        return False
    shape, offsets = info.get("shape"), info.get("data_offsets")
    return (sizes(shape) and len(shape) <= 64 and math.prod(max(d, 1) for d in shape) < 2**62
            and sizes(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1])


def read_safetensors_header(file: BinaryIO, path: Path) -> tuple[dict, int]:
    """(tensor table, byte offset where tensor data starts) of a safetensors file open as `file`
    (named `path` in messages), after checking that the offsets tile the data exactly. The one header
    parser: loading and upload checks both use it."""
    size = os.fstat(file.fileno()).st_size
    file.seek(0)
    raw = file.read(8)
    if len(raw) < 8:
        raise CorruptFileError(f"{path} is too short to be safetensors (truncated?); re-save it")
    (length,) = struct.unpack("<Q", raw)
    if length > min(_MAX_HEADER, size - 8):
        raise CorruptFileError(f"{path} has a header length of {length} bytes, beyond the file; "
                               "it is not safetensors or it is truncated")
    try:
        header = json.loads(file.read(length))
    except (ValueError, RecursionError):
        raise CorruptFileError(f"{path}: the safetensors header is not valid JSON; re-save it") from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path}: the safetensors header is not a JSON object; re-save it")
    header.pop("__metadata__", None)
    for name, info in header.items():
        if not _tensor_entry_ok(info):
            raise CorruptFileError(f"{path}: tensor {name!r} needs a dtype string, a shape (at most 64 sizes) and "
                                   "data_offsets [begin, end], all sizes non-negative integers; it has "
                                   f"{info!r:.200}. Re-save it")
    data_size, end = size - 8 - length, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        if begin != end:
            raise CorruptFileError(f"{path}: tensor {name!r} starts at byte {begin}, expected {end}; re-save it")
        itemsize = _ITEMSIZE.get(info["dtype"])
        if itemsize is not None and stop - begin != math.prod(info["shape"]) * itemsize:
            raise CorruptFileError(f"{path}: tensor {name!r} ({info['dtype']} {info['shape']}) should take "
                                   f"{math.prod(info['shape']) * itemsize} bytes, takes {stop - begin}")
        end = stop
    if end != data_size:
        raise CorruptFileError(f"{path} holds {data_size} bytes of tensor data but its header describes "
                               f"{end}; the file is truncated or padded. Re-save it")
    return header, 8 + length


def safetensors_header(folder: Path, name: str) -> dict:
    """The tensor table of the safetensors file `name` of `folder` (see `read_safetensors_header`)."""
    with confine.open_file(folder, name) as f:
        return read_safetensors_header(f, folder / name)[0]


def validate_folder(folder: str | os.PathLike) -> list[str]:
    """Check config, weights, tokenizer and manifest; the list of files to publish.

    Every entry is checked first: symlinks leading outside the folder and anything but regular files
    and folders (FIFOs, devices, sockets) are refused, since publishing would copy what they point at.

    Raises MissingFileError, CorruptFileError, UnsafeFormatError or UnsafePathError naming the file and the fix.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder; save the model with save_to_preset(folder) first")
    confine.check_folder(folder)
    names = visible_files(folder)
    pickles = [n for n in names if is_pickle(n)]
    if pickles:
        raise UnsafeFormatError(f"{folder} holds pickled files ({', '.join(pickles)}); zoohub publishes "
                                "safetensors only. Delete them (or convert them to safetensors) and retry")
    _check_config(folder, names)
    _check_weights(folder, names)
    if "tokenizer.json" in names:
        from tokenizers import Tokenizer
        try:
            Tokenizer.from_str(confine.read_bytes(folder, "tokenizer.json").decode("utf-8"))
        except Exception as e:
            raise CorruptFileError(f"{folder / 'tokenizer.json'} does not load with `tokenizers` ({e}); "
                                   "re-save the tokenizer") from None
    if "modules.json" in names:
        pooling_config(_read_json(folder, "modules.json"), str(folder))
    integrity.check_manifest(folder)
    return names


def _read_json(folder: Path, name: str):
    try:
        return json.loads(confine.read_bytes(folder, name).decode("utf-8"))
    except ValueError as e:
        raise CorruptFileError(f"{folder / name} is not valid JSON ({e})") from None


def _check_config(folder: Path, names: list[str]) -> None:
    name = "config.json" if "config.json" in names else "adapter_config.json" if "adapter_config.json" in names else None
    if name is None:
        raise MissingFileError(f"{folder} has no config.json; a preset needs transformers' config.json")
    config = _read_json(folder, name)
    if name == "config.json" and not isinstance(config.get("model_type"), str):
        raise CorruptFileError(f"{folder / name} has no 'model_type'; transformers and zoohub need it "
                               "to pick the architecture")


def _check_weights(folder: Path, names: list[str]) -> None:
    for name in names:
        if name.endswith(".safetensors"):
            safetensors_header(folder, name)
    if WEIGHTS in names:
        return
    if INDEX in names:
        index = _read_json(folder, INDEX)
        shards = shard_names(index, str(folder))
        missing = [s for s in shards if s not in names]
        if missing:
            raise MissingFileError(f"{folder / INDEX} names shards that are not in the folder: {', '.join(missing)}")
        mapped = index["weight_map"]
        for shard in shards:
            stored = set(safetensors_header(folder, shard))
            claimed = {k for k, v in mapped.items() if v == shard}
            if stored != claimed:
                diff = sorted(stored ^ claimed)[:5]
                raise CorruptFileError(f"{folder / INDEX} and {shard} disagree on which tensors the shard "
                                       f"holds (first differences: {diff}); re-save the checkpoint")
        return
    if ADAPTER_WEIGHTS not in names:
        raise MissingFileError(f"{folder} has no weights: expected {WEIGHTS}, or {INDEX} with its shards")
