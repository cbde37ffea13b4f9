"""Which files of a repo or folder a model needs, and which are refused.

Only these are fetched; READMEs, pickles, ONNX/TF/Flax exports and training logs never are.
"""
from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from zoohub.errors import CorruptFileError, MissingFileError, UnsafeFormatError
from zoohub.hub.confine import check_name

CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
POOLING_CONFIG = "1_Pooling/config.json"  # sentence-transformers' usual Pooling module folder
# Small files fetched when present, in this order.
OPTIONAL_FILES = (
    "zoohub.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
    "preprocessor_config.json", "chat_template.jinja", "modules.json", "sentence_bert_config.json",
    POOLING_CONFIG,
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_pickle(name: str) -> bool:
    return name.endswith(PICKLE_SUFFIXES) and not name.endswith(".index.json")


def shard_names(index: dict, where: str) -> list[str]:
    """The shard files a `model.safetensors.index.json` names, in first-seen order."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptFileError(f"{where}/{INDEX} has no 'weight_map'; re-save the checkpoint")
    names = [check_name(v, f"{where}/{INDEX}") for v in weight_map.values()]  # strings, before they are hashed
    shards = list(dict.fromkeys(names))
    for shard in shards:
        check_name(shard, f"{where}/{INDEX}")
        if not shard.endswith(".safetensors"):
            raise CorruptFileError(f"{where}/{INDEX} names {shard!r}; shards must be .safetensors files in the folder")
    return shards


def refuse_pickles(names: Collection[str], where: str) -> None:
    pickles = sorted(names)
    raise UnsafeFormatError(
        f"{where} has only pickled weights ({', '.join(pickles)}); zoohub never downloads or unpickles them. "
        "Convert the checkpoint to safetensors (e.g. transformers' `save_pretrained(folder)` writes "
        "model.safetensors) and load that instead")


def select_files(exists: Callable[[str], bool], read_json: Callable[[str], dict], *,
                 listing: Collection[str] | None, where: str,
                 probe: Callable[[str], bool] | None = None) -> list[str]:
    """The files to fetch, config first and weights last.

    Args:
        exists: whether a file is in the repo or folder (may fetch it as a side effect).
        read_json: the parsed content of a JSON file that exists (used for the shard index).
        listing: every file name when known (to name refused pickles); None on hosts without listings.
        where: the handle, for messages.
        probe: whether a refused file exists, without downloading it (used when there is no listing).
    """
    configs = [n for n in CONFIG_FILES if exists(n)]
    if not configs:
        raise MissingFileError(
            f"{where} has no config.json; a preset is a transformers checkpoint folder "
            "(config.json, model.safetensors, tokenizer files). Check the handle")
    if exists(WEIGHTS):
        weights = [WEIGHTS]
    elif exists(INDEX):
        shards = shard_names(read_json(INDEX), where)
        missing = [s for s in shards if not exists(s)]
        if missing:
            raise MissingFileError(f"{where}/{INDEX} lists shards that are not there: {', '.join(missing)}")
        weights = [INDEX, *shards]
    elif exists(ADAPTER_WEIGHTS):
        weights = []
    else:
        pickles = [n for n in listing if is_pickle(n)] if listing is not None else [
            n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (probe or exists)(n)]
        if pickles:
            refuse_pickles(pickles, where)
        raise MissingFileError(
            f"{where} has no weights: expected {WEIGHTS} or {INDEX} with its shards")
    adapter = [ADAPTER_WEIGHTS] if exists(ADAPTER_WEIGHTS) else []
    return configs + [n for n in OPTIONAL_FILES if exists(n)] + weights + adapter


def is_gguf_repo(names: Collection[str], gguf_file: str | None) -> bool:
    """Whether to fetch a GGUF file rather than a transformers checkpoint: one was named, or the repo has
    no config.json but .gguf files."""
    return gguf_file is not None or (not any(n in names for n in CONFIG_FILES) and any(n.endswith(".gguf") for n in names))


def select_gguf(names: Collection[str], gguf_file: str | None, where: str) -> list[str]:
    """The GGUF file to fetch (a single file holds config, tokenizer and weights)."""
    found = sorted(n for n in names if n.endswith(".gguf"))
    if gguf_file is None:
        if len(found) != 1:
            raise MissingFileError(f"{where} holds {len(found)} GGUF files; pick one with gguf_file= "
                                   f"({', '.join(found[:10])})")
        gguf_file = found[0]
    check_name(gguf_file, where)
    if gguf_file not in names:
        raise MissingFileError(f"{where} has no file {gguf_file!r}; its GGUF files: {', '.join(found[:10]) or 'none'}")
    return [gguf_file]


def pooling_config(modules: object, where: str) -> str | None:
    """The config file of the Pooling module a sentence-transformers `modules.json` lists (usually
    `1_Pooling/config.json`); None when it lists none. Every module path is checked to stay inside
    the folder."""
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CorruptFileError(f"{where}/modules.json is not a list of modules; re-save the checkpoint")
    found = None
    for module in modules:
        path = module.get("path", "")
        if path == "":  # the folder itself: the transformer
            continue
        name = check_name(f"{check_name(path, f'{where}/modules.json').rstrip('/')}/config.json",
                          f"{where}/modules.json")
        if str(module.get("type", "")).endswith("Pooling"):
            found = found or name
    return found


def set_default_modes(folder: Path, names: Iterable[str] | None = None) -> None:
    """Give the files `names` of `folder` (all files under it when None) the permissions `open()` gives
    a new file there: 0o644 under umask 022, or what the folder's default ACL says. Tools that write
    through a private temp file (safetensors does) leave 0o600, which other users of a shared hub
    cannot read."""
    probe = folder / f".mode-{uuid.uuid4().hex[:8]}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        os.unlink(probe)
    for path in folder.rglob("*") if names is None else (folder / name for name in names):
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
