"""`zoohub.upload_preset`: publish a preset folder to a hub (hf://, local://, file:// or a path)."""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoohub.errors import InputError
from zoohub.hub import card, local, parse_handle, path_handle
from zoohub.hub.validate import validate_folder

if TYPE_CHECKING:
    from zoohub.presets.registry import Preset


def upload_preset(handle: str | os.PathLike, folder: str | os.PathLike, *, private: bool = False,
                  commit_message: str | None = None, metrics: Mapping[str, float] | None = None) -> str:
    """Validate a preset folder and publish it; the URL of the resulting commit (or folder).

    The folder is checked first (config, safetensors headers and shard index, tokenizer, zoohub.json
    hashes, and, when the model code is installed, that it loads with weights matching the config).
    A README.md model card is added when the folder has none. Publishing unchanged content is a
    no-op: no new commit on a hub, no rewrite of a local target.

    Args:
        handle: "hf://owner/repo[@branch]", "local://owner/name", "file:///path" or a local path.
        folder: the preset folder, e.g. written by `model.save_to_preset(folder)`.
        private: create the hub repo as private (hf:// only; an existing repo keeps its visibility).
        commit_message: defaults to "Upload <name> with zoohub".
        metrics: evaluation results for the model card, e.g. {"accuracy": 0.91}.

    Returns:
        The commit URL on a hub (https://huggingface.co/owner/repo/commit/<sha>), or a file:// URL.

    Example:
        >>> import tempfile, zoohub
        >>> out = tempfile.mkdtemp()
        >>> folder = zoohub.TextClassifier.from_preset("starter_bert_tiny_en").save_to_preset(out + "/my-classifier")
        >>> url = zoohub.upload_preset(out + "/hub/tiny-bert", folder, metrics={"accuracy": 0.5})  # or local://me/...
        >>> url.startswith("file://"), (zoohub.TextClassifier.from_preset(out + "/hub/tiny-bert")).labels
        (True, ['negative', 'positive'])
    """
    folder = Path(folder).expanduser()
    target = parse_handle(os.fspath(handle))
    if target is None:
        target = path_handle(handle)
    if target.scheme == "https":
        raise InputError(f"{handle} is a static web host; zoohub cannot upload there. Upload to a "
                         "local folder (file://...) and copy it to the web server yourself")
    names = validate_folder(folder)
    _check_loads(folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    metadata = json.loads((folder / "zoohub.json").read_text()) if (folder / "zoohub.json").is_file() else {}
    extra: dict[str, bytes] = {}
    if "README.md" not in names:
        extra["README.md"] = card.model_card(config, metadata, str(target), license=_license(metadata),
                                             base=_base(metadata), metrics=metrics).encode()
    if target.scheme == "hf":
        from zoohub.hub import hf_upload

        message = commit_message or f"Upload {target.location.split('/')[-1]} with zoohub"
        return hf_upload.upload(target.location, target.revision, folder, names, extra=extra,
                                private=private, commit_message=message)
    if folder.absolute() == target.path.absolute():
        raise InputError(f"{folder} is both the source and the target of the upload")
    local.publish(folder, target.path, extra)
    return target.path.absolute().as_uri()


def _check_loads(folder: Path) -> None:
    """Load the preset with zoohub when the model code is installed: weights must fit the config."""
    if importlib.util.find_spec("zoohub.tasks") is None or importlib.util.find_spec("zoohub.tasks.backbone") is None:
        return
    from zoohub.tasks.backbone import Backbone

    Backbone.from_preset(folder)


def _registered(name) -> Preset | None:
    from zoohub.presets import registry

    return registry.get_preset(name) if isinstance(name, str) and name in registry.list_presets() else None


def _license(metadata: Mapping) -> str | None:
    """zoohub.json's license, else that of the registered preset it was saved from or fine-tuned from."""
    if metadata.get("license"):
        return metadata["license"]
    for key in ("preset_name", "preset", "base_model"):
        row = _registered(metadata.get(key))
        if row is not None:
            return row.license
    return None


def _base(metadata: Mapping) -> str | None:
    """What the preset was fine-tuned from, for its card: a registry name with its handle, or a hub handle.

    Local paths are left out: they mean nothing to the card's readers and would publish the folder layout.
    """
    base = metadata.get("base_model")
    row = _registered(base)
    if row is not None:
        return row.handle if row.handle.startswith("hf://") else f"{base} ({row.handle})"
    if isinstance(base, str) and (base.startswith(("hf://", "https://", "http://", "local://")) or card.hub_repo(base)):
        return base
    return None
