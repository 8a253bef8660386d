#!/usr/bin/env bash
# The whole test suite: lint, types, then the tests (real Mosquitto, server, daemon, ALSA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check edgespeak tests bench
.venv/bin/ruff format --check edgespeak tests bench
.venv/bin/mypy
exec .venv/bin/pytest "$@"
