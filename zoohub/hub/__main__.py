"""`python -m zoohub.hub download HANDLE`: fetch a preset into the cache (e.g. before going offline)."""
from __future__ import annotations

import argparse
import sys

from zoohub.errors import ZoohubError
from zoohub.hub import fetch, parse_handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoohub.hub")
    sub = parser.add_subparsers(dest="command", required=True)
    download = sub.add_parser("download", help="fetch a preset's files into the cache and print the folder")
    download.add_argument("handle", help="hf://owner/repo[@revision], https://host/folder/, local://owner/name")
    download.add_argument("--revision", default=None)
    args = parser.parse_args(argv)
    try:
        handle = parse_handle(args.handle, revision=args.revision)
        if handle is None:
            parser.error(f"{args.handle!r} is not a handle; use hf://, https://, file:// or local://")
        print(fetch(handle))
    except ZoohubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
