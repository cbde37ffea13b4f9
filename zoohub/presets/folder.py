"""Preset folders: config and metadata reading, atomic saving with a file manifest, and the atomic
folder writer (`write_folder`) that training checkpoints use too.

    >>> import tempfile, pathlib, json
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "p"
    >>> def fill(d): (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    >>> _ = save_preset_folder(target, fill, metadata={"task": "backbone"})
    >>> sorted(p.name for p in target.iterdir())
    ['config.json', 'zoohub.json']
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from zoohub.errors import CorruptFileError, MissingFileError
from zoohub.hub import confine
from zoohub.hub.files import pooling_config
from zoohub.hub.integrity import compute
from zoohub.hub.local import write_folder  # the one atomic folder writer; tasks reach it here

ZOOHUB_FILE = "zoohub.json"


def read_json(folder: Path, name: str, *, required: bool = False, kind: type = dict) -> dict | None:
    """A JSON file of the folder (checked to stay inside it, see `confine`), whose top level is a `kind`
    (an object unless told otherwise); None when absent and not required."""
    path = folder / name
    if not confine.is_file(folder, name):
        if required:
            raise MissingFileError(f"{path} is missing; a preset folder needs {name}")
        return None
    try:
        value = json.loads(confine.read_bytes(folder, name).decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); re-download or re-save the preset") from None
    if not isinstance(value, kind):
        raise CorruptFileError(f"{path} holds a JSON {type(value).__name__}, expected a JSON "
                               f"{'object' if kind is dict else kind.__name__}; re-download or re-save the preset")
    return value


def read_aux_files(folder: Path, names: Iterable[str]) -> dict[str, bytes]:
    """{name: bytes} of the files `names` the folder holds, plus the Pooling module's config that a
    sentence-transformers `modules.json` names; each checked to stay inside the folder (`confine`)."""
    names = list(names)
    if confine.is_file(folder, "modules.json"):
        pooling = pooling_config(read_json(folder, "modules.json", kind=list), str(folder))
        if pooling is not None and pooling not in names:
            names.append(pooling)
    return {name: confine.read_bytes(folder, name) for name in names if confine.is_file(folder, name)}


def read_config(folder: Path) -> dict:
    """config.json, with transformers 4.x keys mapped to 5.x (`torch_dtype` -> `dtype`)."""
    config = read_json(folder, "config.json", required=True)
    if not isinstance(config.get("model_type"), str):
        raise CorruptFileError(f"{folder / 'config.json'} has no 'model_type' string; "
                               "is this a transformers checkpoint?")
    if "torch_dtype" in config and "dtype" not in config:
        config["dtype"] = config.pop("torch_dtype")
    return config


def file_manifest(folder: Path) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} for every file except zoohub.json itself."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != ZOOHUB_FILE:
            out[rel] = {"size": path.stat().st_size, "sha256": compute(path, git_sha1=False).sha256}
    return out


def save_preset_folder(target: Path, fill: Callable[[Path], None], *, metadata: dict) -> Path:
    """Write a preset atomically (`write_folder`): `fill(tmp)` writes the files into a temp folder beside
    `target`, zoohub.json (metadata + manifest) is added, then the folder is renamed into place.

    An interrupted save leaves the previous preset intact (at worst, after a hard kill, a stray `.tmp` folder).
    """
    def fill_with_manifest(tmp: Path) -> None:
        fill(tmp)
        from zoohub import __version__

        meta = {
            "zoohub_version": __version__,
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **metadata,
            "files": file_manifest(tmp),
        }
        (tmp / ZOOHUB_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    return write_folder(Path(target).expanduser(), fill_with_manifest)
