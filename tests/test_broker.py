"""The broker link against real brokers: credentials, TLS, MQTT 5 and the 3.1.1 fallback
(message expiry and the persistent session: tests/test_broker_session.py).

Mosquitto (with a password file, a TLS listener, persistence) is started per test on loopback
ports; the fallback to MQTT 3.1.1 runs against amqtt, a real broker that speaks only 3.1.1 and
refuses a version 5 CONNECT with "unacceptable protocol version" (Mosquitto cannot be limited
to 3.1.1). Certificates come from a throwaway CA (tests/pki.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from amqtt.broker import Broker as AmqttBroker  # type: ignore[import-untyped]
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgespeak.base.errors import ConfigError
from edgespeak.config import MqttConfig, Settings, load_config
from edgespeak.inlets.mqtt.connect import V5, V311, ProtocolChoice, connected, describe_failure
from harness.stack import MosquittoTls, free_port
from tests.conftest import Stack, Watcher, daemon_process, logged, watching
from tests.pki import Pki, make_pki

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished."
PASSWORD = "Zq8-daemon-secret-4471"  # distinctive: grepped for in the logs
WATCHER = {"username": "watcher", "password": "watcher-secret-9930"}
USERS = {"edgespeak": PASSWORD, WATCHER["username"]: WATCHER["password"]}


def reconfigure(stack: Stack, **options: Any) -> None:
    """Restart the stack's Mosquitto (same port) with ``options`` (see stack.Mosquitto)."""
    stack.broker.stop()
    for name, value in options.items():
        setattr(stack.broker, name, value)
    stack.broker.start()


def v5_publish_properties(expiry_s: int) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = expiry_s
    return properties


@contextlib.asynccontextmanager
async def v5_publisher(port: int, **options: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, **options
    ) as client:
        yield client


async def announce_v5(client: aiomqtt.Client, ann_id: str, text: str, *,
                      expiry_s: int | None = None, **fields: Any) -> None:  # fmt: skip
    properties = v5_publish_properties(expiry_s) if expiry_s is not None else None
    payload = json.dumps({"text": text, "id": ann_id, **fields})
    await client.publish("edgespeak/testnode/announce", payload, qos=1, properties=properties)


@contextlib.asynccontextmanager
async def collecting(port: int) -> AsyncIterator[Watcher]:
    """A watcher subscribed to the daemon's topics *before* the daemon starts (unlike
    ``watching``, it does not wait for ``online``), so no event of a queued message is missed."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("edgespeak/testnode/#", qos=1)
        watcher = Watcher(client)
        task = asyncio.create_task(watcher.pump())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def finished_count(w: Watcher, ann_id: str) -> int:
    return w.states(ann_id).count("finished")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


# --- credentials ---------------------------------------------------------------------------


async def test_password_file_logs_in_and_the_announcement_is_spoken(
    stack: Stack, tmp_path: Path
) -> None:
    reconfigure(stack, users=USERS)
    with pytest.raises(aiomqtt.MqttError, match="Not authorized"):  # the broker demands a login
        async with aiomqtt.Client("127.0.0.1", stack.broker.port):
            pass
    secret = tmp_path / "mqtt_password"
    secret.write_text(PASSWORD + "\n")  # the trailing newline is not part of the password
    config = stack.config(mqtt={"username": "edgespeak", "password_file": str(secret)})
    with daemon_process(config, stack.capture, stack.workdir):
        async with watching(stack.broker.port, **WATCHER) as w:
            done = await w.say(DOOR, "auth-1")
    assert done["state"] == "finished", done
    assert stack.capture.read() == await stack.sent(DOOR)
    assert re.search(
        r"as edgespeak-testnode \(p5, c0, k30, u'edgespeak'\)", stack.broker.log.read_text()
    )
    assert PASSWORD not in stack.daemon_log.read_text()


async def test_wrong_password_warns_keeps_retrying_and_connects_once_accepted(
    stack: Stack,
) -> None:
    reconfigure(stack, users=USERS)
    wrong = "wrong-pass-Kx41-never-logged"
    config = stack.config(mqtt={"username": "edgespeak", "password": wrong})
    with daemon_process(config, stack.capture, stack.workdir) as proc:
        await logged(stack.daemon_log, "refused the login")
        await logged(stack.daemon_log, "(attempt 2)")  # retried, the repeat at DEBUG
        assert proc.poll() is None
        reconfigure(stack, users=USERS | {"edgespeak": wrong})  # the broker's side is fixed
        async with watching(stack.broker.port, **WATCHER) as w:
            done = await w.say(DOOR, "auth-2")
    assert done["state"] == "finished", done
    log = stack.daemon_log.read_text()
    warning = (
        r"WARNING edgespeak\.inlets\.mqtt\.link: broker 127\.0\.0\.1:\d+ refused the login: "
        "Not authorized"
    )
    assert len(re.findall(warning, log)) == 1, log  # repeats are DEBUG
    repeat = r"DEBUG edgespeak\.inlets\.mqtt\.link: broker .* refused the login: .*\(attempt 2\)"
    assert re.search(repeat, log)
    assert wrong not in log and wrong not in stack.broker.log.read_text()


def test_password_sources_and_their_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("EDGESPEAK_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("from-systemd-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    config.write_text('[mqtt]\nusername = "edgespeak"\n')
    password = load_config(config).mqtt.resolved_password()
    assert password is not None and password.get_secret_value() == "from-systemd-credential"

    monkeypatch.setenv("EDGESPEAK_MQTT__PASSWORD", "from-env")  # beats the credential
    password = load_config(config).mqtt.resolved_password()
    assert password is not None and password.get_secret_value() == "from-env"

    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    config.write_text(f'[mqtt]\npassword_file = "{secret}"\n')
    with pytest.raises(ConfigError, match="password or password_file, not both") as both:
        load_config(config)
    assert "from-env" not in str(both.value) and PASSWORD not in str(both.value)

    monkeypatch.delenv("EDGESPEAK_MQTT__PASSWORD")
    config.write_text(f'[mqtt]\npassword_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match=r"mqtt: .*cannot read secret file .*missing"):
        load_config(config)


# --- TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_certificate", [False, True], ids=["ca", "client-cert"])
async def test_tls_verified_with_the_ca_speaks(
    stack: Stack, pki: Pki, client_certificate: bool
) -> None:
    tls = MosquittoTls(pki.ca, pki.server_cert, pki.server_key, client_certificate)
    reconfigure(stack, tls=tls)
    mqtt: dict[str, Any] = {"port": stack.broker.tls_port, "tls": True, "ca_file": str(pki.ca)}
    if client_certificate:
        mqtt |= {"certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}
        # The listener really demands one: a client without gets no further than the TLS
        # handshake (TLS 1.2, where the server refuses within the handshake; over TLS 1.3
        # the refusal comes after it and aiomqtt only notices at its 10 s CONNACK timeout).
        context = ssl.create_default_context(cafile=pki.ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(aiomqtt.MqttError, match=r"CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"):
            async with aiomqtt.Client("127.0.0.1", stack.broker.tls_port, tls_context=context):
                pass
    async with stack.daemon(stack.config(mqtt=mqtt)) as w:  # the watcher uses the plain port
        done = await w.say(DOOR, "tls-1")
    assert done["state"] == "finished", done
    assert stack.capture.read() == await stack.sent(DOOR)
    assert f"connected to broker 127.0.0.1:{stack.broker.tls_port} with MQTT 5" in (
        stack.daemon_log.read_text()
    )


async def test_wrong_ca_warns_that_the_certificate_could_not_be_verified_and_retries(
    stack: Stack, pki: Pki, tmp_path: Path
) -> None:
    reconfigure(stack, tls=MosquittoTls(pki.ca, pki.server_cert, pki.server_key))
    stranger = make_pki(tmp_path / "stranger", name="somebody else")
    mqtt = {"port": stack.broker.tls_port, "tls": True, "ca_file": str(stranger.ca)}
    with daemon_process(stack.config(mqtt=mqtt), stack.capture, stack.workdir) as proc:
        await logged(stack.daemon_log, "certificate could not be verified")
        await logged(stack.daemon_log, "(attempt 2)")
        assert proc.poll() is None
    log = stack.daemon_log.read_text()
    assert re.search(
        r"WARNING edgespeak\.inlets\.mqtt\.link: broker 127\.0\.0\.1:\d+: "
        "its TLS certificate could not be "
        r"verified \(self-signed certificate in certificate chain\); check \[mqtt\] ca_file",
        log,
    ), log
    assert "connected to broker" not in log


# --- protocol version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "logged_as"), [(None, "p5, c0, k30"), ("3.1.1", "p2, c0, k30")]
)
async def test_mqtt_5_by_default_and_3_1_1_when_asked_both_without_clean_start(
    stack: Stack, protocol: str | None, logged_as: str
) -> None:
    mqtt = {"protocol": protocol} if protocol else {}
    async with stack.daemon(stack.config(mqtt=mqtt)) as w:
        done = await w.say(DOOR, "proto-1")
    assert done["state"] == "finished", done
    # Mosquitto: p5 = MQTT 5, p2 = 3.1.1; c0 = clean start/session off (persistent session).
    assert f"as edgespeak-testnode ({logged_as})" in stack.broker.log.read_text()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def amqtt_log() -> Iterator[_Records]:
    """What the amqtt broker logs (it runs in this process)."""
    records = _Records()
    logger = logging.getLogger("amqtt")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


@contextlib.asynccontextmanager
async def amqtt_broker(port: int) -> AsyncIterator[AmqttBroker]:
    """amqtt, an MQTT 3.1.1-only broker, anonymous, on 127.0.0.1:``port``."""
    broker = AmqttBroker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })  # fmt: skip
    await broker.start()
    try:
        yield broker
    finally:
        await broker.shutdown()


def v5_refusals(records: _Records) -> int:
    return sum("Invalid protocol" in m and m.endswith(": 5") for m in records.messages)


def probe_settings(port: int, protocol: str = "auto") -> Settings:
    return Settings(node_id="probe", mqtt=MqttConfig(port=port, protocol=protocol))


async def test_auto_falls_back_to_3_1_1_once_on_a_broker_without_mqtt_5(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fallback the daemon's link uses (``connected``), against a real 3.1.1-only broker.

    The daemon's own CONNECT (a will, a Session Expiry Interval) cannot be used here: amqtt
    reads a version 5 CONNECT's properties as 3.1.1 fields and then waits for bytes that never
    come instead of refusing it (config.example.toml tells such users to set "3.1.1"), so this
    probe connects without them."""
    port = free_port()
    settings = probe_settings(port)
    choice = ProtocolChoice(settings)
    with (
        amqtt_log() as records,
        caplog.at_level(logging.INFO, logger="edgespeak.inlets.mqtt.connect"),
    ):
        async with amqtt_broker(port):
            async with connected(settings, choice, identifier="probe-1") as client:
                await client.subscribe("probe/#", qos=1)
                await client.publish("probe/echo", b"over 3.1.1", qos=1)
                async for message in client.messages:
                    assert message.payload == b"over 3.1.1"
                    break
            assert choice.version == V311 and v5_refusals(records) == 1
            async with connected(settings, choice, identifier="probe-2"):
                pass  # straight to 3.1.1: for the life of the process
    assert v5_refusals(records) == 1
    assert [r.getMessage() for r in caplog.records if "MQTT 5" in r.getMessage()] == [
        f"broker 127.0.0.1:{port} refused MQTT 5 ([code:132] Unsupported protocol version): "
        "using MQTT 3.1.1 from now on"
    ]


async def test_protocol_5_forced_is_not_downgraded() -> None:
    port = free_port()
    settings = probe_settings(port, "5")
    choice = ProtocolChoice(settings)
    with amqtt_log() as records:
        async with amqtt_broker(port):
            with pytest.raises(MqttConnectError) as refused:
                async with connected(settings, choice, identifier="probe-5"):
                    pass
    assert choice.version == V5 and v5_refusals(records) == 1
    assert describe_failure(refused.value, f"127.0.0.1:{port}") == (
        f"broker 127.0.0.1:{port} refused the connection: Unsupported protocol version (code 132)"
    )


async def test_daemon_on_3_1_1_speaks_through_a_broker_without_mqtt_5(stack: Stack) -> None:
    port = free_port()
    config = stack.config(mqtt={"port": port, "protocol": "3.1.1"})
    async with amqtt_broker(port):
        with daemon_process(config, stack.capture, stack.workdir):
            async with watching(port) as w:
                done = await w.say(DOOR, "old-broker-1")
    assert done["state"] == "finished", done
    assert stack.capture.read() == await stack.sent(DOOR)
    assert f"connected to broker 127.0.0.1:{port} with MQTT 3.1.1" in stack.daemon_log.read_text()
