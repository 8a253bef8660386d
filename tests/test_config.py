"""load_config with real TOML files and real environment variables, and config.example.toml."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from pydantic import BaseModel

from edgespeak.base.errors import ConfigError
from edgespeak.config import Settings, load_config, sanitise_node_id, secrets

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
SECRETS = ("hunter2-mqtt-pass", "sk-fish-0123456789")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGESPEAK_* variable of the developer's shell leaks into a test."""
    for name in os.environ:
        if name.startswith("EDGESPEAK_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, ""))
    assert s.node_id == sanitise_node_id(socket.gethostname())
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.prefix, s.mqtt.password) == (
        "127.0.0.1",
        1883,
        "edgespeak",
        None,
    )
    assert (s.tts.url, s.tts.format, s.tts.sample_rate, s.tts.model) == (None, "pcm", 22050, "s1")
    assert (s.server.port, s.server.close_after_finish, s.server.token) == (8765, False, None)
    assert s.log_level == "INFO" and s.cache.enabled and s.daemon.queue_max == 20


def test_file_values_are_read(tmp_path: Path) -> None:
    s = load_config(
        write(
            tmp_path,
            'node_id = "attic"\n[mqtt]\nhost = "broker.lan"\nport = 1884\n'
            'password = "hunter2-mqtt-pass"\n[tts]\nurl = "wss://api.fish.audio/v1/tts/live"\n',
        )
    )
    assert (s.node_id, s.mqtt.host, s.mqtt.port) == ("attic", "broker.lan", 1884)
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == SECRETS[0]
    assert s.tts_url == "wss://api.fish.audio/v1/tts/live"


def test_env_overrides_the_file_and_keeps_its_other_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGESPEAK_MQTT__PORT", "1999")
    monkeypatch.setenv("EDGESPEAK_NODE_ID", "cellar")
    s = load_config(
        write(tmp_path, 'node_id = "attic"\n[mqtt]\nhost = "broker.lan"\nport = 1884\n')
    )
    assert (s.mqtt.port, s.mqtt.host, s.node_id) == (1999, "broker.lan", "cellar")


def test_env_value_is_validated_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESPEAK_MQTT__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        load_config(write(tmp_path, ""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nbogus = 1\n", r"mqtt\.bogus: unknown key"),
        ("[speakers]\nvolume = 3\n", r"speakers: unknown key"),
        ('colour = "blue"\n', r"colour: unknown key"),
        ('[mqtt]\nport = "abc"\n', r"mqtt\.port: .*integer"),
        ("[mqtt]\nport = 70000\n", r"mqtt\.port: .*65535"),
        ('[tts]\nformat = "mp3"\n', r"tts\.format"),
        ("[tts]\nreconnect_max_s = 0\n", r"tts\.reconnect_max_s"),
        ('[audio]\nperiods = "many"\n', r"audio\.periods"),
        ('[mqtt]\nprefix = "home/#"\n', r"mqtt\.prefix"),
        ('[tts]\nurl = "http://api.fish.audio/v1/tts/live"\n', r"tts\.url: .*ws://"),
        ('node_id = "Kitchen Pi"\n', r"node_id: .*try 'kitchen_pi'"),
        ('log_level = "LOUD"\n', r"log_level"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_tts_has_its_own_reconnect_cap_with_the_brokers_default(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, ""))
    assert s.tts.reconnect_max_s == s.mqtt.reconnect_max_s == 30.0
    s = load_config(write(tmp_path, "[mqtt]\nreconnect_max_s = 60\n[tts]\nreconnect_max_s = 5\n"))
    assert (s.mqtt.reconnect_max_s, s.tts.reconnect_max_s) == (60.0, 5.0)


def test_bad_toml_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 1"):
        load_config(write(tmp_path, "[mqtt\nport = 1\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "broken",
    ['[mqtt]\nport = "abc"\n', "[mqtt]\nbogus = 1\n", 'node_id = "Bad Name"\n', "[mqtt\n"],
)
def test_secrets_never_appear_in_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    monkeypatch.setenv("EDGESPEAK_SERVER__TOKEN", "env-token-secret-42")
    secrets = f'password = "{SECRETS[0]}"\n[tts]\napi_key = "{SECRETS[1]}"\n'
    path = write(tmp_path, broken + ("" if broken.startswith("[mqtt]") else "[mqtt]\n") + secrets)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for secret in (*SECRETS, "env-token-secret-42"):
        assert secret not in str(info.value)


def test_tts_url_and_token_fall_back_to_the_local_server(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 9000\ntoken = "tok"\n'))
    assert s.tts_url == "ws://127.0.0.1:9000/v1/tts/live"
    assert s.tts_token is not None and s.tts_token.get_secret_value() == "tok"
    s = load_config(write(tmp_path, '[server]\nhost = "10.0.0.5"\nport = 9001\n'))
    assert s.tts_url == "ws://10.0.0.5:9001/v1/tts/live"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Kitchen Pi.local", "kitchen_pi_local"), ("  --pi-4--  ", "--pi-4--"), ("...", "edgespeak")],
)
def test_sanitise_node_id(name: str, expected: str) -> None:
    assert sanitise_node_id(name) == expected


def _documented_keys(text: str) -> dict[str | None, set[str]]:
    """Keys per section (None: top level), whether set (``key =``) or commented (``# key =``)."""
    keys: dict[str | None, set[str]] = {None: set()}
    section: str | None = None
    for line in text.splitlines():
        if header := re.fullmatch(r"\s*#?\s*\[([A-Za-z0-9_.-]+)\]\s*(#.*)?", line):
            section = header.group(1)
            keys.setdefault(section, set())
        elif key := re.match(r"\s*#?\s*([A-Za-z0-9_]+)\s*=", line):
            keys[section].add(key.group(1))
    return keys


def test_example_config_loads_and_documents_every_key() -> None:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    load_config(EXAMPLE)
    documented = _documented_keys(EXAMPLE.read_text())
    missing = []
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            missing += [
                f"[{name}] {key}"
                for key in model.model_fields
                if key not in documented.get(name, set())
            ]
        elif name not in documented[None]:
            missing.append(name)
    assert not missing, f"keys not documented in config.example.toml: {missing}"


def test_the_tts_api_key_comes_from_a_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tts_api_key").write_text("sk-from-credstore\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("EDGESPEAK_TTS__URL", "wss://api.fish.audio/v1/tts/live")
    token = load_config(None).tts_token
    assert token is not None and token.get_secret_value() == "sk-from-credstore"
    assert "sk-from" not in repr(token)
    monkeypatch.setenv("EDGESPEAK_TTS__API_KEY", "sk-env")  # the config wins
    token = load_config(None).tts_token
    assert token is not None and token.get_secret_value() == "sk-env"


def test_outside_the_service_the_credstore_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``edgespeak doctor`` run by root finds the key scripts/install stored for the service."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("EDGESPEAK_TTS__URL", "wss://api.fish.audio/v1/tts/live")
    monkeypatch.setattr(secrets, "CREDSTORE", tmp_path)
    assert load_config(None).tts_token is None
    (tmp_path / "edgespeak.tts_api_key").write_text("sk-stored\n")
    token = load_config(None).tts_token
    assert token is not None and token.get_secret_value() == "sk-stored"
    service = tmp_path / "service"
    service.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(service))  # in the service: its own only
    assert load_config(None).tts_token is None


def test_the_tts_api_key_from_a_file_and_not_both(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-file\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[tts]\nurl = "wss://x.example/v1/tts/live"\napi_key_file = "{key}"\n')
    token = load_config(cfg).tts_token
    assert token is not None and token.get_secret_value() == "sk-file"
    cfg.write_text(f'[tts]\napi_key = "sk-inline"\napi_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match="api_key or api_key_file") as info:
        load_config(cfg)
    assert "sk-" not in str(info.value)
