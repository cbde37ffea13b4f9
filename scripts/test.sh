#!/usr/bin/env bash
# The test command (README): the whole suite, offline, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest tests -p no:cacheprovider "$@"
