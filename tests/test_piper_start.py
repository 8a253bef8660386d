"""``edgespeak serve`` at start: a voice that cannot speak stops it with a clear error (exit 2)
before it listens, never at the first request; and a machine without Piper still speaks
espeak-ng (Piper hidden from a real server process by a ``sitecustomize`` module)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from harness.stack import LocalServer, edgespeak_command, free_port
from tests.conftest import base_env
from tests.helpers import espeak_pcm, server_audio
from tests.test_piper_server import JOE, copy_voice

# Imported first by every Python started with this directory on PYTHONPATH: Piper and
# onnxruntime then fail to import, as on a machine without the extra.
HIDE_PIPER = """
import sys
class _NoPiper:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("piper", "onnxruntime"):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoPiper())
"""


def serve_fails(tmp_path: Path, server_toml: str) -> str:
    """``edgespeak serve`` with ``[server]`` keys ``server_toml``: it must exit 2 without
    listening; returns its stderr."""
    config = tmp_path / "server.toml"
    config.write_text(f"[server]\nport = {free_port()}\n{server_toml}\n")
    done = subprocess.run(
        edgespeak_command("serve", "--config", str(config)),
        capture_output=True, text=True, env=base_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "listening" not in done.stdout
    return done.stderr


def test_unknown_voice_stops_the_start(tmp_path: Path) -> None:
    err = serve_fails(tmp_path, 'voice = "en_US-nobody-medium"')
    assert "unknown voice 'en_US-nobody-medium': neither a Piper voice nor an espeak-ng" in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate the model", "cannot load"),
        ("delete the model", "its model file is missing"),
        ("delete the config", "its config file is missing"),
        ("truncate the config", "is not a Piper voice config"),
        ("config of another kind", "is not a Piper voice config: no key 'espeak'"),
        ("a Git LFS pointer", "is a Git LFS pointer, not a model"),
    ],
)
def test_a_missing_or_corrupt_voice_file_stops_the_start(
    tmp_path: Path, damage: str, message: str
) -> None:
    model, config = copy_voice(tmp_path / "voices", "en_US-broken-medium")
    match damage:
        case "truncate the model":
            model.write_bytes(model.read_bytes()[:1_000_000])
        case "delete the model":
            model.unlink()
        case "delete the config":
            config.unlink()
        case "truncate the config":
            config.write_text(config.read_text()[:500])
        case "config of another kind":
            config.write_text(json.dumps({"audio": {"sample_rate": 22050}}))
        case "a Git LFS pointer":
            model.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    err = serve_fails(
        tmp_path, f'voice = "en_US-broken-medium"\npiper_voices_dir = "{tmp_path / "voices"}"'
    )
    assert "edgespeak serve: Piper voice 'en_US-broken-medium'" in err
    assert message in err


async def test_without_piper_the_server_speaks_espeak_ng(tmp_path: Path) -> None:
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE_PIPER)
    env = base_env()
    env["PYTHONPATH"] = f"{hidden}:{env['PYTHONPATH']}"
    probe = await asyncio.to_thread(
        subprocess.run,
        [edgespeak_command()[0], "-c", "import piper"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "hidden by the test" in probe.stderr  # the machine now looks like one without it
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n')
    server = LocalServer(config, tmp_path / "server.log", env)
    url = server.start()
    try:
        text = "Someone is at the front door."
        assert await server_audio(url, text, fmt="pcm", rate=22050) == espeak_pcm(text)
        async with aiohttp.ClientSession() as http:  # the voice is listed, but cannot speak
            body = {"text": "Hi", "format": "pcm", "reference_id": JOE}
            async with http.post(f"http://127.0.0.1:{port}/v1/tts", json=body) as response:
                assert response.status == 400
                assert "Piper is not installed" in (await response.json())["message"]
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Piper voices are installed but Piper is not" in log
    assert "default voice en (espeak-ng)" in log
