#!/usr/bin/env bash
# The whole test suite: lint, types, then the tests (real Mosquitto, server, daemon, ALSA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check edgespeak harness tests bench
.venv/bin/ruff format --check edgespeak harness tests bench
.venv/bin/mypy
.venv/bin/lint-imports  # the rooms import only downward (pyproject.toml [tool.importlinter])
exec .venv/bin/pytest "$@"
