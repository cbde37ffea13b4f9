"""The hub client: handles, downloads and caches, offline mode, integrity checks, upload mechanics.

It knows nothing of models: it moves preset folders (transformers checkpoints) between places.

    >>> from zoohub.hub import parse_handle
    >>> parse_handle("hf://openai-community/gpt2@main").revision
    'main'
"""
from __future__ import annotations

from pathlib import Path

from zoohub.hub.handles import Handle, local_hub_root, parse_handle, path_handle

__all__ = ["Handle", "fetch", "local_hub_root", "parse_handle", "path_handle"]


def fetch(handle: Handle, *, gguf_file: str | None = None) -> Path:
    """A local folder with the files a model needs from `handle`, downloading (and checking) when remote.
    `gguf_file` names the one GGUF file to fetch from a repo of them (else a repo with no config.json and
    a single .gguf file gets that one).

    Example:
        >>> import pathlib, zoohub
        >>> from zoohub.hub import fetch, parse_handle, path_handle
        >>> starter = pathlib.Path(zoohub.__file__).resolve().parent / "data" / "starter-bert-tiny"
        >>> fetch(path_handle(starter)) == starter           # a local folder: checked (zoohub.json), not copied
        True
        >>> folder = fetch(parse_handle("hf://google-bert/bert-base-uncased"))  # downloads  # doctest: +SKIP
    """
    if handle.scheme == "hf":
        from zoohub.hub import hf
        return hf.fetch(handle.location, handle.revision, gguf_file=gguf_file)
    if handle.scheme == "https":
        from zoohub.hub import static
        return static.fetch(handle.location)
    from zoohub.hub import integrity, local
    folder = local.resolve(handle)
    # Nothing checked a local folder on its way here: its zoohub.json manifest is checked now (sizes,
    # and sha256 of files not verified since they last changed), as downloads are in hf and static.
    integrity.check_manifest(folder)
    return folder
