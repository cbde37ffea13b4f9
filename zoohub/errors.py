"""The one error hierarchy of zoohub.

Every message names the thing, what was expected, and how to fix it.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZoohubError(Exception):
    """Base class of every error zoohub raises on purpose.

    >>> import zoohub
    >>> issubclass(zoohub.errors.IntegrityError, zoohub.errors.ZoohubError)
    True
    """


class PresetNotFoundError(ZoohubError, LookupError):
    """A preset name, handle or folder does not exist."""


class UnsupportedArchitectureError(ZoohubError):
    """A `model_type` or `architectures` entry zoohub does not implement."""


class UnsupportedConfigError(ZoohubError, ValueError):
    """A config field that changes the math and is not implemented, or an invalid value."""


class PresetFileError(ZoohubError):
    """A file of a preset is missing, corrupt, or in a refused format."""


class MissingFileError(PresetFileError, FileNotFoundError):
    """A file a preset needs is not there."""


class CorruptFileError(PresetFileError):
    """A file is truncated, malformed, or its checksum does not match."""


class UnsafeFormatError(PresetFileError):
    """Pickled weights (`pytorch_model.bin`, `.pt`, `.ckpt`): refused, never read."""


class UnsafePathError(PresetFileError):
    """A file a preset names leads outside its folder (absolute path, `..`, symlink out) or is not a
    regular file (device, FIFO, socket): refused, never opened."""


class WeightMismatchError(ZoohubError, ValueError):
    """Checkpoint keys or shapes do not match what the config implies."""


class HubError(ZoohubError):
    """Base class for errors talking to a hub."""


class HubUnreachableError(HubError, ConnectionError):
    """The host could not be reached."""


class OfflineError(HubError):
    """Offline mode, and the needed files are not cached."""


class AuthError(HubError, PermissionError):
    """401/403: missing token, wrong token, or a gated repo."""


class RepoNotFoundError(HubError, PresetNotFoundError):
    """The repo does not exist (or is private and no token was given)."""


class RevisionNotFoundError(HubError, PresetNotFoundError):
    """The branch, tag or commit does not exist in the repo."""


class IntegrityError(HubError, CorruptFileError):
    """Downloaded bytes do not match the published checksum."""


class BackendError(ZoohubError, RuntimeError):
    """The selected backend cannot do this (e.g. training on numpy)."""


class InputError(ZoohubError, ValueError):
    """Bad user data: mismatched lengths, labels out of range, empty input."""


class DiskFullError(ZoohubError, OSError):
    """No room to write a preset, checkpoint or download: the disk, a quota or the file size limit is full."""


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' did you mean ...?' suffix, or '' when nothing is close.

    >>> close_matches("bert", ["bart", "gpt2"])
    " did you mean 'bart'?"
    >>> close_matches("xyz", ["bert"])
    ''
    """
    found = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not found:
        return ""
    return " did you mean " + " or ".join(repr(f) for f in found) + "?"


def not_found(message: str, name: str, choices: Iterable[str], fix: str) -> str:
    """`message`, then '; did you mean ...?' when a choice is close to `name`, then the fix in parentheses.

    >>> not_found("preset 'bert_tiny' not found", "bert_tiny", ["bert_tiny_en"], "zoohub list lists all")
    "preset 'bert_tiny' not found; did you mean 'bert_tiny_en'? (zoohub list lists all)"
    >>> not_found("preset 'xyz' not found", "xyz", ["bert_tiny_en"], "zoohub list lists all")
    "preset 'xyz' not found (zoohub list lists all)"
    """
    hint = close_matches(name, choices)
    return f"{message};{hint} ({fix})" if hint else f"{message} ({fix})"
