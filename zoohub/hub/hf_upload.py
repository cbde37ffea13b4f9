"""Upload mechanics for hf:// targets, through `huggingface_hub` (repo creation, LFS, commit).

Unchanged files are skipped by the Hub's preupload answer (it returns each file's current oid);
when nothing changed no commit is made and the URL of the current head is returned.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub import constants as hf_constants

from zoohub.hub import env
from zoohub.hub.hf import translate_errors


@contextlib.contextmanager
def _lfs_unless_xet_endpoint(endpoint: str) -> Iterator[None]:
    """Use Xet only on the official Hub; mirrors and self-hosted endpoints get the plain LFS protocol.

    huggingface_hub reads HF_HUB_DISABLE_XET at import, but checks its module constant at call time.
    """
    previous = hf_constants.HF_HUB_DISABLE_XET
    hf_constants.HF_HUB_DISABLE_XET = previous or not env.use_xet_for_upload(endpoint)
    try:
        yield
    finally:
        hf_constants.HF_HUB_DISABLE_XET = previous


def upload(repo_id: str, revision: str | None, folder: Path, names: list[str], *,
           extra: dict[str, bytes], private: bool, commit_message: str) -> str:
    """Create the repo if needed and commit `names` from `folder` plus `extra` {path: bytes}; the commit URL."""
    endpoint, token = env.hf_endpoint(), env.hf_token()
    if token is None:
        from zoohub.errors import AuthError
        raise AuthError(f"uploading to hf://{repo_id} needs a token with write access: set HF_TOKEN "
                        "(create one at https://huggingface.co/settings/tokens) or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in names]
    operations += [CommitOperationAdd(path_in_repo=n, path_or_fileobj=data) for n, data in extra.items()]
    with env.hf_progress(), _lfs_unless_xet_endpoint(endpoint), \
            translate_errors(repo_id, revision or "main", endpoint, token):
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message,
                                 revision=revision)
    return info.commit_url
