#!/usr/bin/env bash
# The test command (README): the whole suite plus every docstring example, offline, on the CPU, spread
# over one pytest-xdist worker per core (ZOOHUB_TEST_WORKERS=0 runs it in one process); tests marked with one
# xdist_group (those sharing an expensive module or session fixture) run on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest tests zoohub --doctest-modules -p no:cacheprovider -n "${ZOOHUB_TEST_WORKERS:-auto}" --dist loadgroup "$@"
