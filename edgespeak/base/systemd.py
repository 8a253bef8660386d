"""sd_notify(3) for ``Type=notify`` units: READY, STATUS, STOPPING and watchdog pings.

Sources: sd_notify(3) for the datagram protocol (newline-separated ``KEY=VALUE`` assignments sent
to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``; a leading ``@`` means an abstract socket),
sd_watchdog_enabled(3) for ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` and for pinging at half the
interval.

Library: the pure-Python ``sdnotify`` package, not ``systemd-python``. PyPI ships
``systemd-python`` as a source distribution only, so a Pi would need gcc, pkg-config and
``libsystemd-dev`` and a slow build on a Zero 2 W for what is one ``send()`` on a datagram
socket; it has no watchdog-interval helper either. ``sdnotify`` connects to the socket (path or
abstract) and sends, which is all the protocol needs. Its limits, and what this module does
about them:

* it encodes text as Latin-1, while systemd ignores a ``STATUS=`` that is not valid UTF-8: the
  message is handed over as UTF-8 bytes in Latin-1 clothing, so the bytes on the wire are UTF-8;
* it swallows every error unless ``debug=True``: we pass ``debug=True`` and log failures at
  DEBUG ourselves (a lost notification must never stop the daemon);
* it connects once: if that fails, the next message tries again (a failed connect leaves its
  socket to the garbage collector: a ResourceWarning where those are shown, nothing else);
* it has no type hints (hence the ``type: ignore`` on the import).

The watchdog interval is parsed here (a dozen lines, following sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import sdnotify  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

STATUS_MAX_CHARS = 256
"""``STATUS=`` texts are cut to this many characters (systemd drops a whole notification
datagram of 4096 bytes or more; a status is for ``systemctl status``, not a log)."""


def watchdog_interval_from_env(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog interval in seconds that systemd expects pings within, or None.

    Per sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` (microseconds, a positive integer) enables
    the watchdog, but only for the process ``$WATCHDOG_PID`` names when that is set. Returns None
    when unset, 0, malformed (logged at DEBUG), or meant for another pid. Never raises.
    """
    usec_text = environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    try:
        usec = int(usec_text)
        watchdog_pid = int(pid_text) if pid_text else None
    except ValueError:
        log.debug("sd_notify: ignoring malformed WATCHDOG_USEC/WATCHDOG_PID")
        return None
    if usec <= 0 or (watchdog_pid is not None and watchdog_pid != pid):
        return None
    return usec / 1_000_000


def _one_line(text: str) -> str:
    """``text`` as a single line of at most STATUS_MAX_CHARS characters.

    A newline would start a new assignment in the datagram (``"x\\nREADY=1"``), so line
    breaks become spaces: status texts may quote announcement text that came over MQTT.
    """
    flat = " ".join(text.splitlines()).replace("\0", " ")
    if len(flat) > STATUS_MAX_CHARS:
        flat = flat[: STATUS_MAX_CHARS - 1] + "…"
    return flat


class Notifier:
    """Talks to the service manager through ``$NOTIFY_SOCKET``, read when constructed.

    With no ``$NOTIFY_SOCKET`` (not started by systemd, or not ``Type=notify``) every method is
    a cheap no-op. No method raises: a failed send is logged at DEBUG and dropped. Safe to call
    from any thread (each message is one datagram).
    """

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        self._interval_s = watchdog_interval_from_env(os.environ, os.getpid())
        self._sender: Any = None
        if self._address is not None:
            self._connect()

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` was set, i.e. a service manager listens for us."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """``WatchdogSec=`` in seconds when systemd expects pings from this process, else None.

        None also when notifications are not enabled (pings could not be delivered).
        Ping at half this interval (sd_watchdog_enabled(3)); :func:`watchdog_loop` does.
        """
        return self._interval_s if self.enabled else None

    def ready(self, status: str) -> None:
        """Startup finished (``READY=1``); ``status`` is shown by ``systemctl status``."""
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (``STATUS=``)."""
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self) -> None:
        """Shutdown has begun (``STOPPING=1``)."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Keep-alive ping (``WATCHDOG=1``); see :func:`watchdog_loop`."""
        self._send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; a later message reconnects. Idempotent."""
        sender, self._sender = self._sender, None
        if sender is not None and sender.socket is not None:
            sender.socket.close()

    def _connect(self) -> bool:
        """Connect to ``$NOTIFY_SOCKET`` (sdnotify reads the environment itself)."""
        try:
            self._sender = sdnotify.SystemdNotifier(debug=True)
        except Exception as exc:  # with debug=True sdnotify re-raises what connect() raised
            log.debug("sd_notify: cannot connect to %s: %r", self._address, exc)
            self._sender = None
        return self._sender is not None

    def _send(self, message: str) -> None:
        if self._address is None or (self._sender is None and not self._connect()):
            return
        try:
            # sdnotify encodes with Latin-1: give it the UTF-8 bytes as Latin-1 characters.
            self._sender.notify(message.encode("utf-8").decode("latin-1"))
        except Exception as exc:  # with debug=True sdnotify re-raises what send() raised
            kind = message.partition("=")[0]  # never log the text itself
            log.debug("sd_notify: %s to %s not delivered: %r", kind, self._address, exc)
            self.close()


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping the systemd watchdog every half interval while ``healthy()`` returns True.

    Returns at once when the watchdog is not enabled (:attr:`Notifier.watchdog_interval_s` is
    None). Otherwise runs until cancelled. ``healthy()`` is called once per half interval in the
    event loop; when it returns False (or raises) no ping is sent and a WARNING is logged once
    for that spell, so systemd kills and restarts (``Restart=``) a daemon that stays unhealthy
    for ``WatchdogSec=``; if it turns True again before that, pings resume (logged at INFO).
    A blocked event loop sends no pings either, which is the other thing this guards against.
    """
    interval_s = notifier.watchdog_interval_s
    if interval_s is None:
        return
    period_s = interval_s / 2
    was_healthy = True
    while True:
        error: Exception | None = None
        try:
            ok = bool(healthy())
        except Exception as exc:  # a broken check counts as unhealthy
            ok, error = False, exc
        if ok:
            notifier.watchdog()
            if not was_healthy:
                log.info("watchdog: healthy again, pings resumed")
        elif was_healthy:
            log.warning(
                "watchdog: daemon unhealthy%s, pings stopped; systemd restarts it after %.1f s"
                " unless it recovers",
                " (health check raised)" if error else "",
                interval_s,
                exc_info=error,
            )
        was_healthy = ok
        await asyncio.sleep(period_s)
