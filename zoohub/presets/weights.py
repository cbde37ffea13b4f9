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
from zoohub.hub import confine
from zoohub.hub.files import INDEX, WEIGHTS, is_pickle, refuse_pickles, set_default_modes, shard_names
from zoohub.hub.validate import read_safetensors_header

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _index(folder: Path) -> dict | None:
    """The parsed shard index, or None when the folder has none."""
    if not confine.is_file(folder, INDEX):
        return None
    try:
        index = json.loads(confine.read_bytes(folder, INDEX))
    except (ValueError, RecursionError) as e:
        raise CorruptFileError(f"{folder / INDEX}: not a valid safetensors index ({e}); "
                               "re-download or re-save it") from None
    shard_names(index, str(folder))  # a weight_map, naming .safetensors files inside the folder
    return index


def weight_files(folder: Path) -> list[str]:
    """The safetensors files of a preset folder (names inside it), refusing pickles with a clear error."""
    index = _index(folder)
    if index is not None:
        return sorted(set(index["weight_map"].values()))
    if confine.is_file(folder, WEIGHTS):
        return [WEIGHTS]
    pickles = [p.name for p in folder.iterdir() if is_pickle(p.name)] if folder.is_dir() else []
    if pickles:
        refuse_pickles(pickles, str(folder))
    raise MissingFileError(f"{folder}: no {WEIGHTS} or {INDEX}; a preset needs safetensors weights")


def read_safetensors(folder: Path, name: str) -> dict[str, np.ndarray]:
    """Tensors of the file `name` of `folder` as read-only views of a memory map: nothing is copied.

    The file is checked to be a regular file inside the folder (`confine`) before it is opened."""
    path = folder / name
    if not confine.is_file(folder, name):
        raise MissingFileError(f"weights file {path} is missing")
    with confine.open_file(folder, name) as f:
        header, start = read_safetensors_header(f, path)  # checks the offsets tile the data exactly
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for key, info in header.items():
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CorruptFileError(f"{path}: tensor {key!r} has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        out[key] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + info["data_offsets"][0]).reshape(shape)
    return out


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a preset folder (single file or shards), memory-mapped, by checkpoint name."""
    tensors: dict[str, np.ndarray] = {}
    for name in weight_files(folder):
        for key, arr in read_safetensors(folder, name).items():
            if key in tensors:
                raise CorruptFileError(f"tensor {key!r} appears in two shards ({name} and another)")
            tensors[key] = arr
    index = _index(folder)
    if index is not None:
        expected = set(index["weight_map"])
        if expected != set(tensors):
            missing = sorted(expected - set(tensors))[:5]
            raise CorruptFileError(f"{folder / INDEX} lists tensors not found in the shards: {missing}")
    return tensors


def _write_file(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    # transformers refuses safetensors files without format=pt metadata. safetensors writes through a
    # private temp file (mode 0o600); write_weights then gives the file the usual permissions.
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
        set_default_modes(folder, [WEIGHTS])
        return [WEIGHTS]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        _write_file(folder / name, shard)
        weight_map.update({k: name for k in shard})
    total = sum(v.nbytes for v in tensors.values())
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    set_default_modes(folder, names)
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
