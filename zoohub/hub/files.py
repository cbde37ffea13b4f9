"""Which files of a repo or folder a model needs, and which are refused.

Only these are fetched; READMEs, pickles, ONNX/TF/Flax exports and training logs never are.
"""
from __future__ import annotations

from collections.abc import Callable, Collection

from zoohub.errors import CorruptFileError, MissingFileError, UnsafeFormatError

CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Small files fetched when present, in this order.
OPTIONAL_FILES = (
    "zoohub.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
    "preprocessor_config.json", "chat_template.jinja", "modules.json", "sentence_bert_config.json",
    "1_Pooling/config.json",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_pickle(name: str) -> bool:
    return name.endswith(PICKLE_SUFFIXES) and not name.endswith(".index.json")


def shard_names(index: dict, where: str) -> list[str]:
    """The shard files a `model.safetensors.index.json` names, in first-seen order."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptFileError(f"{where}/{INDEX} has no 'weight_map'; re-save the checkpoint")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or not shard.endswith(".safetensors") or ".." in shard or shard.startswith("/"):
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
