"""``[esphome]``: defaults, the encryption key (TOML, environment, systemd credential; never
shown), and nothing of the ESPHome libraries imported by a daemon that has it disabled."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from edgespeak.base.errors import ConfigError
from edgespeak.config import load_config, secrets
from tests.conftest import Stack, base_env, daemon_process, watching

KEY = base64.b64encode(bytes(range(32))).decode()
SHORT = base64.b64encode(b"sixteen bytes!!!").decode()
# What a daemon with [esphome] must not load while it is disabled (top-level module names).
ESPHOME_LIBRARIES = ("aioesphomeapi", "google.protobuf", "noise", "zeroconf", "miniaudio",
                     "cryptography", "edgespeak.inlets.esphome")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("EDGESPEAK_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_disabled_by_default_on_esphomes_port(tmp_path: Path) -> None:
    e = load_config(write(tmp_path, "")).esphome
    assert (e.enabled, e.host, e.port, e.encryption_key, e.discovery) == (
        False, "0.0.0.0", 6053, None, True,
    )  # fmt: skip
    assert e.resolved_key() is None


def test_a_valid_key_decodes_to_32_bytes_and_is_never_shown(tmp_path: Path) -> None:
    e = load_config(write(tmp_path, f'[esphome]\nenabled = true\nencryption_key = "{KEY}"\n'))
    assert e.esphome.resolved_key() == bytes(range(32))
    assert KEY not in repr(e) and KEY not in str(e.esphome)


@pytest.mark.parametrize(
    ("key", "why"),
    [("not base64 at all!", "is not base64"), (SHORT, "decodes to 16 bytes")],
)
def test_a_bad_key_is_refused_naming_the_key_not_its_value(
    tmp_path: Path, key: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=f"esphome.encryption_key: .*{why}") as caught:
        load_config(write(tmp_path, f'[esphome]\nencryption_key = "{key}"\n'))
    assert key not in str(caught.value)


def test_the_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESPEAK_ESPHOME__ENCRYPTION_KEY", KEY)
    assert load_config(write(tmp_path, "")).esphome.resolved_key() == bytes(range(32))


def test_the_key_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "esphome_key").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = write(tmp_path, "")
    assert load_config(config).esphome.resolved_key() == bytes(range(32))
    (credentials / "esphome_key").write_text(SHORT + "\n")
    with pytest.raises(ConfigError, match="credential esphome_key decodes to 16 bytes") as bad:
        load_config(config).esphome.resolved_key()
    assert SHORT not in str(bad.value)


def test_outside_the_service_the_credstore_key_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "CREDSTORE", tmp_path)
    config = write(tmp_path, "")
    assert load_config(config).esphome.resolved_key() is None
    (tmp_path / "edgespeak.esphome_key").write_text(KEY)
    assert load_config(config).esphome.resolved_key() == bytes(range(32))


def imported(log: Path) -> set[str]:
    """Modules named in a ``python -X importtime`` log (PYTHONPROFILEIMPORTTIME)."""
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", log.read_text(), re.M)
    return set(found)


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize("enabled", [False, True], ids=["disabled", "enabled"])
async def test_a_daemon_loads_the_esphome_libraries_only_when_enabled(
    stack: Stack, enabled: bool
) -> None:
    """The daemon's own imports, as Python logs them while it runs and speaks: disabled,
    none of the ESPHome libraries; enabled (no key, so no Noise), the API's ones."""
    config = stack.config()
    config.write_text(
        config.read_text() + f'[esphome]\nenabled = {str(enabled).lower()}\nhost = "127.0.0.1"\n'
        "port = 0\ndiscovery = false\n"
    )
    env = base_env() | {"PYTHONPROFILEIMPORTTIME": "1"}
    with daemon_process(config, stack.capture, stack.workdir, env=env):
        async with watching(stack.broker.port) as w:
            assert (await w.say("Testing the imports.", "imports"))["state"] == "finished"
    modules = imported(stack.daemon_log)
    assert "edgespeak.daemon" in modules and "aiohttp" in modules  # the log is complete
    if enabled:
        assert loaded(modules, "aioesphomeapi") and loaded(modules, "edgespeak.inlets.esphome")
        assert not loaded(modules, "noise")  # no key: no Noise
    else:
        assert [name for name in ESPHOME_LIBRARIES if loaded(modules, name)] == []
