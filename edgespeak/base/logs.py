"""Logging set-up: plain timestamped lines on a terminal, syslog-prefixed lines for journald.

Under systemd, stderr is a stream socket to journald and ``$JOURNAL_STREAM`` holds that
socket's ``device:inode`` (decimal; systemd.exec(5), sd_journal_stream_fd(3)). When it matches
``fstat(stderr)`` (a child that inherited the variable but writes elsewhere does not match),
each line starts with a syslog priority ``<N>`` (sd-daemon(3): ``<2>`` critical, ``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug), which journald strips and stores as the entry's
PRIORITY (``SyslogLevelPrefix=yes``, the default), and carries no timestamp: journald stamps
every entry itself.

journald makes one entry of every line of a stream (systemd-journald.service(8)), so a
traceback becomes several entries, and an unprefixed continuation line would get the stream's
default priority (info) and vanish from ``journalctl -p err``. Every line of a multi-line record
(message, traceback, stack) therefore carries the record's prefix.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Terminal/file format (the one ``edgespeak`` has always used)."""
JOURNAL_FORMAT = "%(name)s: %(message)s"
"""journald format, after the ``<N>`` prefix; journald adds time, unit and pid."""


def syslog_priority(levelno: int) -> int:
    """The syslog priority (sd-daemon(3), RFC 5424) for a :mod:`logging` level number."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def is_journal_stream(fd: int, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``fd`` is the journald stream that ``$JOURNAL_STREAM`` names.

    ``$JOURNAL_STREAM`` is ``<st_dev>:<st_ino>`` in decimal. False when it is unset, malformed,
    names another file, or ``fd`` cannot be stat'ed. Never raises.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return False


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, with the ``<N>`` repeated on every continuation line."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record (with its traceback, if any), each line prefixed by its priority."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class _EdgespeakHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`setup_logging` installed, so a second call replaces it."""


def setup_logging(level: str) -> None:
    """Send log records at ``level`` and above (``"DEBUG"``, ``"INFO"``, …) to stderr.

    journald format when stderr is the stream ``$JOURNAL_STREAM`` names, else
    :data:`PLAIN_FORMAT`. Replaces the handler an earlier call installed; leaves other handlers
    alone. Raises ValueError for an unknown level name.
    """
    root = logging.getLogger()
    root.setLevel(level)  # ValueError for an unknown name, before anything changes
    stream = sys.stderr
    try:
        journal = is_journal_stream(stream.fileno())
    except (OSError, ValueError):  # a stderr without a file descriptor (captured, closed)
        journal = False
    handler = _EdgespeakHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN_FORMAT))
    for old in [h for h in root.handlers if isinstance(h, _EdgespeakHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
