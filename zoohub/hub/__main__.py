"""`python -m zoohub.hub download HANDLE`: fetch a preset into the cache (e.g. before going offline).

The hub knows handles, not the registry: for a registry name (`bert_base_en_uncased`) use
`zoohub download NAME`, which resolves the name to its pinned handle and fetches the same files.
Exit codes as for `zoohub`: 0 success, 1 the download failed, 2 bad usage or input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoohub.errors import InputError, PresetNotFoundError, ZoohubError
from zoohub.hub import fetch, parse_handle, path_handle

PROG = "python -m zoohub.hub"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Fetch presets by hub handle (for registry names: "
                                                             "zoohub download NAME).")
    sub = parser.add_subparsers(dest="command", required=True)
    download = sub.add_parser(
        "download", help="fetch a preset's files into the cache and print the folder",
        description="Fetch a preset's files into the cache and print the folder. For a registry name, "
                    "use `zoohub download NAME`.")
    download.add_argument("handle", help="hf://owner/repo[@revision], https://host/folder/, local://owner/name, "
                                         "file:///path or a folder")
    download.add_argument("--revision", default=None, help="branch, tag or commit (hf:// only)")
    args = parser.parse_args(argv)
    try:
        handle = parse_handle(args.handle, revision=args.revision)
        if handle is None and Path(args.handle).expanduser().is_dir():
            handle = path_handle(args.handle)
        if handle is None:
            parser.error(f"{args.handle!r} is not a hub handle; for a registry name run "
                         f"`zoohub download {args.handle}` (this command takes hf://, https://, file:// "
                         "or local:// handles and folders)")
        print(fetch(handle))
    except (InputError, PresetNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (ZoohubError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
