"""Secrets from files and systemd credentials; their content is never put in a message."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import (
    SecretStr,
)

from edgespeak.base.errors import ConfigError


def read_secret(path: Path) -> SecretStr:
    """The content of the secret file at ``path``, trailing newlines stripped.

    Raises ConfigError naming the file and the OS error (never the content).
    """
    try:
        return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read secret file {path}: {why}") from None


CREDSTORE = Path("/etc/credstore")  # where scripts/install puts edgespeak.<name>


def credential(name: str) -> SecretStr | None:
    """The systemd credential ``name``: ``$CREDENTIALS_DIRECTORY/<name>`` in the service (from
    the unit's ``LoadCredential=``); outside it (``edgespeak doctor``, ``say``, ``cache warm``
    run by root) the same file in ``/etc/credstore/edgespeak.<name>`` when readable. None when
    there is none. Raises ConfigError when the service's credential cannot be read."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        return read_secret(path) if path.is_file() else None
    stored = CREDSTORE / f"edgespeak.{name}"
    if stored.is_file() and os.access(stored, os.R_OK):
        return read_secret(stored)
    return None
