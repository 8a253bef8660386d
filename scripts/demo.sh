#!/usr/bin/env bash
# The main job on its embedded default: a local broker, the local TTS server (Piper's
# en_US-joe-medium, else espeak-ng) and the daemon; speaks examples/announcements.txt on the default ALSA device (or into
# edgespeak-demo.wav when there is no sound card) and prints source, TTFA and duration of each.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m harness.demo "$@"
