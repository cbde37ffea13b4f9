#!/usr/bin/env bash
# The test command (README): the whole suite plus every docstring example, offline, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest tests zoohub --doctest-modules -p no:cacheprovider "$@"
