"""Talking to the broker (aiomqtt): connecting with the right protocol, session, credentials and
TLS. :mod:`edgespeak.inlets.mqtt.link` runs the daemon's connection on top; the node's topics
are :mod:`edgespeak.inlets.mqtt.topics`'.

Protocol: MQTT 5 by default; with ``[mqtt] protocol = "auto"`` a broker that refuses version 5
("unsupported protocol version") is asked again at once with 3.1.1, which is then kept for the
life of the process. The session is persistent (fixed client id; MQTT 5: clean start off and a
Session Expiry Interval of ``[mqtt] session_expiry_s``; 3.1.1: clean session off) so QoS 1
announcements published during a short disconnect are delivered after reconnect. An MQTT 5
message's remaining Message Expiry Interval is passed on (the daemon caps the announcement's TTL
with it). Retained announcements are dropped: they would replay old speech at every start.

Credentials: ``[mqtt] username`` and the password from ``MqttConfig.resolved_password`` (never
logged). TLS verifies the broker's certificate and host name (``[mqtt] ca_file``, else the
system CA store), optionally presenting a client certificate. Reconnects by itself with
jittered capped backoff (:mod:`edgespeak.inlets.mqtt.link`); a refused login or an unverifiable
certificate
is described as such by :func:`describe_failure`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import connack_string
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgespeak.config import Settings

log = logging.getLogger(__name__)

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311
UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason code (paho maps a 3.1.1 broker's 1 to it)
REFUSED_LOGIN = {4, 5, 134, 135}  # "bad user name or password", "not authorized" (3.1.1 and 5)


def make_client(
    settings: Settings,
    *,
    identifier: str | None,
    protocol: aiomqtt.ProtocolVersion | None = None,
    persistent: bool = False,
    **kwargs: object,
) -> aiomqtt.Client:
    """An aiomqtt client for ``[mqtt]``: host, port, credentials, TLS, keepalive (seconds).

    ``protocol`` None = from ``[mqtt] protocol`` (``"auto"`` → MQTT 5; the fallback to 3.1.1
    is :func:`connected`'s). ``persistent``: keep the session across disconnects (MQTT 5:
    clean start off and Session Expiry Interval ``[mqtt] session_expiry_s`` seconds; 3.1.1:
    clean session off); else a clean session that ends with the connection. With ``[mqtt] tls``
    the broker's certificate and host name are verified against ``ca_file`` (None: the system
    CA store), presenting ``certfile``/``keyfile`` when set. ``kwargs`` go to aiomqtt.Client.

    TCP_NODELAY is set: announcements and events are small messages where Nagle's algorithm
    meeting delayed ACKs costs ~40 ms each (paho does not set it).

    Raises ConfigError when the password file cannot be read (see
    :meth:`~edgespeak.config.MqttConfig.resolved_password`).
    """
    mqtt = settings.mqtt
    version = protocol or (V311 if mqtt.protocol == "3.1.1" else V5)
    session: dict[str, Any]
    if version == V5:
        properties = None
        if persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = mqtt.session_expiry_s
        session = {"clean_start": not persistent, "properties": properties}
    else:
        session = {"clean_session": not persistent}
    tls = None
    if mqtt.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
            certfile=str(mqtt.certfile) if mqtt.certfile else None,
            keyfile=str(mqtt.keyfile) if mqtt.keyfile else None,
        )
    password = mqtt.resolved_password()
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=password.get_secret_value() if password else None,
        identifier=identifier,
        protocol=version,
        keepalive=mqtt.keepalive_s,
        tls_params=tls,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **session,
        **kwargs,  # type: ignore[arg-type]
    )


def protocol_name(version: aiomqtt.ProtocolVersion) -> str:
    """``"5"`` or ``"3.1.1"`` (as in ``[mqtt] protocol``)."""
    return "5" if version == V5 else "3.1.1"


def _reason_code(exc: aiomqtt.MqttCodeError) -> int | None:
    """The CONNACK reason code of a refused connection (MQTT 5 numbering where paho maps it)."""
    if isinstance(exc.rc, ReasonCode):
        return int(exc.rc.value)
    return exc.rc


def describe_failure(exc: BaseException, where: str) -> str:
    """A log line for a failed connection to the broker at ``where`` (``host:port``): a refused
    login, an unverifiable TLS certificate, another refusal, or unreachable. Carries no secret:
    paho's reason strings and OS/SSL errors never contain the password."""
    if isinstance(exc, MqttConnectError):
        code = _reason_code(exc)
        reason = str(exc.rc) if isinstance(exc.rc, ReasonCode) else connack_string(code or 0)
        if code in REFUSED_LOGIN:
            return (
                f"broker {where} refused the login: {reason} (check [mqtt] username and password)"
            )
        return f"broker {where} refused the connection: {reason} (code {code})"
    cause = exc.__context__  # aiomqtt re-raises OSError/SSLError as MqttError "from None"
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        detail = cause.verify_message if isinstance(cause, ssl.SSLCertVerificationError) else exc
        return (
            f"broker {where}: its TLS certificate could not be verified ({detail}); "
            "check [mqtt] ca_file and that [mqtt] host is a name or IP address in the certificate"
        )
    if isinstance(cause, ssl.SSLError):
        return f"broker {where}: TLS handshake failed: {exc}"
    return f"broker {where} unreachable: {exc}"


def message_expiry_s(message: aiomqtt.Message) -> float | None:
    """The remaining Message Expiry Interval the broker sent with ``message`` (MQTT 5), seconds;
    None when the message has none (or came over MQTT 3.1.1)."""
    value = getattr(message.properties, "MessageExpiryInterval", None)
    return float(value) if value is not None else None


class ProtocolChoice:
    """The MQTT version to connect with: ``[mqtt] protocol``; with ``"auto"``, MQTT 5 until a
    broker refuses it for its version, then 3.1.1 for the life of this object (keep one per
    process)."""

    def __init__(self, settings: Settings) -> None:
        self.auto = settings.mqtt.protocol == "auto"
        self.version = V311 if settings.mqtt.protocol == "3.1.1" else V5

    def fall_back(self, exc: MqttConnectError) -> bool:
        """Switch to 3.1.1 if ``exc`` is a refusal of MQTT 5 for its version and ``auto`` allows
        it; True when it switched."""
        if self.auto and self.version == V5 and _reason_code(exc) == UNSUPPORTED_PROTOCOL_VERSION:
            self.version = V311
            return True
        return False


@contextlib.asynccontextmanager
async def connected(
    settings: Settings, choice: ProtocolChoice, *, identifier: str | None, **kwargs: Any
) -> AsyncIterator[aiomqtt.Client]:
    """An aiomqtt client connected with ``choice.version`` (see :func:`make_client` for
    ``identifier`` and ``kwargs``). When the broker refuses MQTT 5 as an unsupported version
    and ``choice`` allows it, the CONNECT is repeated at once with 3.1.1 (logged once, INFO).

    Raises MqttError when it cannot connect (MqttConnectError: the broker refused), ConfigError
    when the password file cannot be read.
    """
    async with contextlib.AsyncExitStack() as stack:
        try:
            client = make_client(settings, identifier=identifier, protocol=choice.version, **kwargs)
            await stack.enter_async_context(client)
        except MqttConnectError as exc:
            if not choice.fall_back(exc):
                raise
            where = f"{settings.mqtt.host}:{settings.mqtt.port}"
            log.info("broker %s refused MQTT 5 (%s): using MQTT 3.1.1 from now on", where, exc)
            client = make_client(settings, identifier=identifier, protocol=choice.version, **kwargs)
            await stack.enter_async_context(client)
        yield client
