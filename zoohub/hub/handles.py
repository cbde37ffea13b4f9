"""Handles: the strings that say where a preset lives.

    >>> parse_handle("hf://google-bert/bert-base-uncased@v1.0")
    Handle(scheme='hf', location='google-bert/bert-base-uncased', revision='v1.0')
    >>> parse_handle("https://models.example.org/bert-tiny").location
    'https://models.example.org/bert-tiny/'
    >>> parse_handle("bert_base_en_uncased") is None   # a registry name: not a handle
    True
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from zoohub.errors import InputError, PresetNotFoundError
from zoohub.hub import env

# The Hub's rule for owner and repo names.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Handle:
    """A parsed handle.

    scheme: "hf" (a Hugging Face Hub repo), "https" (a folder on a static web host, http or https),
    "file" (a local folder), or "local" (a folder of the embedded hub under $ZOOHUB_HOME/hub).
    location: the repo id, the folder URL (ending in "/"), or the folder path.
    revision: branch, tag, commit or refs/pr/N (hf only).
    """

    scheme: str
    location: str
    revision: str | None = None

    def __str__(self) -> str:
        if self.scheme == "hf":
            return f"hf://{self.location}" + (f"@{self.revision}" if self.revision else "")
        if self.scheme == "https":
            return self.location
        if self.scheme == "local":
            return f"local://{self.location}"
        return self.location

    @property
    def path(self) -> Path:
        """The folder of a file:// or local:// handle."""
        if self.scheme == "file":
            return Path(self.location)
        if self.scheme == "local":
            return local_hub_root() / self.location
        raise AttributeError(f"{self} is not a local handle")


def local_hub_root() -> Path:
    """The embedded default hub: one folder per owner/name under $ZOOHUB_HOME/hub."""
    return env.zoohub_home() / "hub"


def parse_handle(text: str | os.PathLike, *, revision: str | None = None) -> Handle | None:
    """Parse a handle with a scheme; None for a bare name or path (the caller decides what it is).

    `revision=` overrides an `@revision` in the text.
    """
    text = os.fspath(text)
    if text.startswith("hf://"):
        repo, _, rev = text[len("hf://"):].partition("@")  # revisions may hold "/", repo ids never "@"
        repo = repo.strip("/")
        if not REPO_ID.match(repo):
            raise PresetNotFoundError(
                f"{text!r} is not a valid Hugging Face handle; expected hf://owner/repo[@revision]")
        rev = revision or rev or None
        return Handle("hf", repo, rev)
    if text.startswith(("https://", "http://")):
        if revision:
            raise InputError(f"{text!r} is a static host folder and has no revisions; put the version in the URL")
        if not urlparse(text).netloc:
            raise PresetNotFoundError(f"{text!r} has no host; expected https://host/path/to/folder/")
        return Handle("https", text if text.endswith("/") else text + "/")
    if text.startswith("file://"):
        if revision:
            raise InputError(f"{text!r} is a local folder and has no revisions")
        path = unquote(urlparse(text).path) if text.startswith("file:///") else text[len("file://"):]
        return Handle("file", str(Path(path).expanduser().absolute()))
    if text.startswith("local://"):
        if revision:
            raise InputError(f"{text!r} is in the local hub, which keeps one version per name")
        name = text[len("local://"):].strip("/")
        if not REPO_ID.match(name):
            raise PresetNotFoundError(f"{text!r} is not a valid local hub handle; expected local://owner/name")
        return Handle("local", name)
    return None


def path_handle(path: str | os.PathLike) -> Handle:
    """A plain local path as a file handle."""
    return Handle("file", str(Path(path).expanduser().absolute()))
