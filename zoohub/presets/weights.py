"""Safetensors weights: memory-mapped reading (no copies), sharded writing, pickle refusal.

Reading checks the 8-byte length + JSON header (with the hub's validator) and hands out views of one mmap:
`safetensors.numpy.load_file` copies every tensor (~0.45 s for 538 MB here). Writing uses
the `safetensors` library.

    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_weights({"a.weight": np.ones((2, 3), np.float32)}, d)
    ['model.safetensors']
    >>> read_weights(d)["a.weight"].shape
    (2, 3)
"""
from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from zoohub.errors import CorruptFileError, MissingFileError
from zoohub.hub.files import INDEX, WEIGHTS, is_pickle, refuse_pickles
from zoohub.hub.validate import read_safetensors_header

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a preset folder, refusing pickles with a clear error."""
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CorruptFileError(f"{index}: not a valid safetensors index ({e}); re-download or re-save it") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    pickles = [p.name for p in folder.iterdir() if is_pickle(p.name)]
    if pickles:
        refuse_pickles(pickles, str(folder))
    raise MissingFileError(f"{folder}: no {WEIGHTS} or {INDEX}; a preset needs safetensors weights")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of one file as read-only views of a memory map: nothing is copied."""
    if not path.is_file():
        raise MissingFileError(f"weights file {path} is missing")
    header, start = read_safetensors_header(path)  # checks the offsets tile the data exactly
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CorruptFileError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + info["data_offsets"][0]).reshape(shape)
    return out


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a preset folder (single file or shards), memory-mapped, by checkpoint name."""
    tensors: dict[str, np.ndarray] = {}
    for path in weight_files(folder):
        for name, arr in read_safetensors(path).items():
            if name in tensors:
                raise CorruptFileError(f"tensor {name!r} appears in two shards ({path.name} and another)")
            tensors[name] = arr
    index = folder / INDEX
    if index.is_file():
        expected = set(json.loads(index.read_text())["weight_map"])
        if expected != set(tensors):
            missing = sorted(expected - set(tensors))[:5]
            raise CorruptFileError(f"{index} lists tensors not found in the shards: {missing}")
    return tensors


def _write_file(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    # transformers refuses safetensors files without format=pt metadata.
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def write_weights(tensors: Mapping[str, np.ndarray], folder: Path, *, max_shard_bytes: int = 5 * 2**30) -> list[str]:
    """Write tensors as model.safetensors, or as shards plus an index when larger than a shard."""
    tensors = {k: np.asarray(v) for k, v in tensors.items()}
    for k, v in tensors.items():
        if v.dtype not in _NAMES:
            raise ValueError(f"tensor {k!r} has dtype {v.dtype}, which safetensors cannot store")
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if shards[-1] and size + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    if len(shards) == 1:
        _write_file(folder / WEIGHTS, shards[0])
        return [WEIGHTS]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        _write_file(folder / name, shard)
        weight_map.update({k: name for k in shard})
    total = sum(v.nbytes for v in tensors.values())
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return names + [INDEX]


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """{"a": {"b": x}} -> {"a.b": x}."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping) -> dict:
    """{"a.b": x} -> {"a": {"b": x}}."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree
