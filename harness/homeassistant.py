"""Home Assistant itself, for the end-to-end tests: run from the root ``scripts/ha-root`` builds.

:func:`ha_root` builds the root once (cached outside the clone) and returns it.
:class:`HomeAssistant` runs ``python -m homeassistant`` chrooted into it, in a private mount
namespace (``unshare --mount``) holding the bind mounts: /proc, /dev, the test's config folder
as /config and the host's CA bundle. The mounts go away with the namespace when Home Assistant
exits, however it exits, and are never seen outside it. The chroot shares the host's network:
loopback ports are reachable both ways (our Mosquitto, our daemon's ESPHome port, a media URL).

:class:`HomeAssistantApi` is a REST client of it (aiohttp): onboarding (the first user, then a
token from ``/auth/token``), config flows (``/api/config/config_entries/flow``), services and
states. Waits poll the real condition, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from harness.stack import StackError, free_port, stop_process

#: The newest Home Assistant for Python 3.13 (Debian 13); later releases need Python 3.14.2.
HA_VERSION: Final = "2026.2.3"
ROOT_SCRIPT: Final = Path(__file__).resolve().parent.parent / "scripts" / "ha-root"
#: Seconds Home Assistant gets to answer HTTP (measured ~8 s on 2 cores).
START_S: Final = 90.0
#: Seconds Home Assistant gets to stop after SIGTERM before SIGKILL.
STOP_S: Final = 30.0
#: Where the root expects the host's CA bundle (scripts/ha-root creates it).
ROOT_CERT: Final = "/run/host-ssl/ca-certificates.crt"

# Run by /bin/sh in the new mount namespace: mount, then exec Home Assistant in the chroot, so
# the process keeps the PID that Popen returned (SIGTERM reaches Home Assistant itself).
_LAUNCH: Final = """
set -eu
root=$1 config=$2 cert=$3
shift 3
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$config" "$root/config"
if [ -n "$cert" ]; then mount --bind "$cert" "$root/run/host-ssl/ca-certificates.crt"; fi
exec chroot "$root" /usr/bin/env -i PATH=/opt/ha/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
  TZ=UTC SSL_CERT_FILE=/run/host-ssl/ca-certificates.crt "$@"
"""


def ha_root(version: str = HA_VERSION) -> Path:
    """The root with Home Assistant ``version`` in /opt/ha: built by ``scripts/ha-root`` on the
    first call on this machine (a few minutes, as root, from Debian's and PyPI's registries),
    then taken from its cache. Raises StackError when the build fails."""
    done = subprocess.run(
        [str(ROOT_SCRIPT)],
        env=os.environ | {"HA_VERSION": version},
        stdout=subprocess.PIPE,
        text=True,
    )  # its progress goes to our stderr
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise StackError(f"scripts/ha-root failed with {done.returncode}")
    root = Path(lines[-1])
    if not (root / "opt/ha/bin/hass").exists():
        raise StackError(f"{root} has no /opt/ha/bin/hass")
    return root


def host_cert() -> Path | None:
    """The CA bundle pip uses here (``PIP_CERT``, ``SSL_CERT_FILE``), if there is one."""
    for name in ("PIP_CERT", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


@dataclass
class HomeAssistant:
    """Home Assistant from ``root`` with its config in ``workdir/config`` (on the host), HTTP on
    127.0.0.1:``port`` (a free port by default). ``yaml``: more ``configuration.yaml``."""

    root: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    yaml: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """Home Assistant's own log file."""
        return self.config_dir / "home-assistant.log"

    @property
    def console(self) -> Path:
        """What the process wrote to stdout and stderr."""
        return self.workdir / "homeassistant.out"

    def write_config(self) -> None:
        """``configuration.yaml``: ``http`` on loopback, ``onboarding``, ``api``, ``logger``
        at ``warning``, and ``internal_url`` so the URLs it hands to devices (the ESPHome ffmpeg
        proxy) point at its loopback port."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            f"homeassistant:\n  internal_url: {self.url}\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "onboarding:\napi:\nlogger:\n  default: warning\n" + self.yaml
        )

    def start(self, timeout_s: float = START_S) -> float:
        """Start it and return the seconds until its HTTP server answered. Raises StackError
        (with the end of its output) when it exits first or time is up."""
        self.write_config()
        cert = host_cert()
        started = time.monotonic()
        with self.console.open("ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _LAUNCH,
                 "launch", str(self.root), str(self.config_dir), str(cert or ""),
                 "/opt/ha/bin/python", "-m", "homeassistant", "--config", "/config"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: ffmpeg children stop with it
            )  # fmt: skip
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise StackError(f"Home Assistant exited with {code}\n{self.tail()}")
            if self._answers():
                return time.monotonic() - started
            time.sleep(0.1)  # polls the real condition, bounded by the deadline
        raise StackError(f"Home Assistant not answering after {timeout_s:g} s\n{self.tail()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=1) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout_s: float = STOP_S) -> None:
        """SIGTERM (Home Assistant stops cleanly), SIGKILL after ``timeout_s`` seconds; then
        whatever it left in its process group."""
        if self.proc is None:
            return
        stop_process(self.proc, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        """The end of its output, for error messages."""
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self, *loggers: str) -> list[str]:
        """The WARNING and ERROR records of its log whose logger starts with one of
        ``loggers`` (e.g. ``homeassistant.components.mqtt``), each with its continuation lines
        (tracebacks), verbatim; all of them with no ``loggers``."""
        if not self.log.exists():
            return []
        record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (\w+) \(([^)]*)\) \[([^\]]+)\]")
        found: list[str] = []
        keep = False
        for line in self.log.read_text(errors="replace").splitlines():
            head = record.match(line)
            if head:
                level, logger = head.group(1), head.group(3)
                keep = level in ("WARNING", "ERROR", "CRITICAL") and (
                    not loggers or logger.startswith(loggers)
                )
                if keep:
                    found.append(line)
            elif keep:
                found[-1] += "\n" + line
        return found


class HomeAssistantError(RuntimeError):
    """Home Assistant answered a REST call with an error status, or a flow did not end in an
    entry."""


class HomeAssistantApi:
    """A REST client of the Home Assistant at ``url`` (call :meth:`onboard` first)."""

    CLIENT_ID: Final = "http://127.0.0.1/"

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.token: str | None = None

    async def onboard(self, username: str = "edgespeak", password: str = "edgespeak-test") -> str:
        """Create the owner (``/api/onboarding/users``), trade its auth code for an access
        token (``/auth/token``, valid 30 min) and keep it. Returns the token."""
        user = {"client_id": self.CLIENT_ID, "name": "edgespeak test", "username": username,
                "password": password, "language": "en"}  # fmt: skip
        created = await self.request("POST", "/api/onboarding/users", user, auth=False)
        form = {"grant_type": "authorization_code", "code": created["auth_code"],
                "client_id": self.CLIENT_ID}  # fmt: skip
        async with self.session.post(f"{self.url}/auth/token", data=form) as reply:
            if reply.status != 200:
                raise HomeAssistantError(f"/auth/token: {reply.status} {await reply.text()}")
            self.token = str((await reply.json())["access_token"])
        return self.token

    async def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """``method path`` with the JSON ``body``; the decoded JSON reply. Raises
        HomeAssistantError for a status of 400 or more."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=headers
        ) as reply:
            if reply.status >= 400:
                raise HomeAssistantError(f"{method} {path}: {reply.status} {await reply.text()}")
            return await reply.json(content_type=None)

    async def add_entry(self, handler: str, *steps: dict[str, Any]) -> dict[str, Any]:
        """Start the config flow of ``handler`` and submit ``steps`` (one dict per form, in
        order); the flow's final result (``type`` ``create_entry``, with ``result`` the entry).
        Raises HomeAssistantError when a form comes back with errors, the flow aborts or asks
        for more steps than given."""
        path = "/api/config/config_entries/flow"
        result = await self.request("POST", path, {"handler": handler})
        for data in steps:
            if result.get("type") != "form":
                break
            result = await self.request("POST", f"{path}/{result['flow_id']}", data)
            if result.get("errors"):
                raise HomeAssistantError(f"{handler} flow: {result}")
        if result.get("type") != "create_entry":
            raise HomeAssistantError(f"{handler} flow did not create an entry: {result}")
        found: dict[str, Any] = result
        return found

    async def entries(self, domain: str) -> list[dict[str, Any]]:
        """The config entries of ``domain`` (each with ``state``, e.g. ``loaded``)."""
        found: list[dict[str, Any]] = await self.request(
            "GET", f"/api/config/config_entries/entry?domain={domain}"
        )
        return found

    async def call(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        """Call ``domain.service`` with ``data``; returns the states it changed. Home Assistant
        answers once the service call is done (for MQTT entities: once published)."""
        return await self.request("POST", f"/api/services/{domain}/{service}", data)

    async def websocket(self, command: str, **data: Any) -> Any:
        """One command of the WebSocket API (``/api/websocket``, for what REST lacks: the
        device registry ``config/device_registry/list``, repairs ``repairs/list_issues``); its
        ``result``. Raises HomeAssistantError when it fails."""
        async with self.session.ws_connect(f"{self.url}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": self.token})
            if (await ws.receive_json())["type"] != "auth_ok":
                raise HomeAssistantError("websocket: authentication refused")
            await ws.send_json({"id": 1, "type": command, **data})
            reply = await ws.receive_json()
        if not reply.get("success"):
            raise HomeAssistantError(f"websocket {command}: {reply}")
        return reply["result"]

    async def states(self) -> list[dict[str, Any]]:
        """Every entity's state (``entity_id``, ``state``, ``attributes``, …)."""
        found: list[dict[str, Any]] = await self.request("GET", "/api/states")
        return found

    async def wait_states(
        self, ready: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll :meth:`states` until ``ready(states)``; returns those states. TimeoutError
        after ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s):
            while True:
                states = await self.states()
                if ready(states):
                    return states
                await asyncio.sleep(0.05)  # polls the real condition, bounded by the timeout

    async def wait_state(
        self, entity_id: str, ready: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll ``entity_id``'s state until ``ready(state)``; returns it. TimeoutError after
        ``timeout_s`` seconds."""

        def has(states: list[dict[str, Any]]) -> bool:
            return any(s["entity_id"] == entity_id and ready(s) for s in states)

        states = await self.wait_states(has, timeout_s)
        return next(s for s in states if s["entity_id"] == entity_id)
