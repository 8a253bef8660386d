"""A whole local stack on loopback: Mosquitto, ``edgespeak serve``, ``edgespeak run``.

Used by ``edgespeak demo``, the benchmarks and the tests. Every process gets an ephemeral port
and its own work directory; readiness is awaited on the real condition (a port accepting, the
server's "listening on" line), bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STARTUP_S = 20.0


class StackError(RuntimeError):
    """A stack process could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = STARTUP_S) -> None:
    """Return once 127.0.0.1:``port`` accepts. Raises StackError if ``proc`` exits or time's up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # polls the real condition, bounded by the deadline
    raise StackError(f"nothing listening on port {port} after {timeout_s:g} s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def edgespeak_command(*args: str) -> list[str]:
    """``python -m edgespeak ARGS`` with this interpreter."""
    return [sys.executable, "-m", "edgespeak", *args]


@dataclass
class Mosquitto:
    """A Mosquitto broker on 127.0.0.1:``port``; :meth:`restart` keeps the ports.

    ``nodelay`` sets ``set_tcp_nodelay true``: Mosquitto's default leaves Nagle's algorithm on,
    which measured ~40 ms per hop for small messages (publish → spoken 88 ms vs 1.4 ms on a
    cache hit, bench/latency.py).

    Options (defaults: anonymous, plain TCP only, no persistence):
    ``users``: user name → password, written with ``mosquitto_passwd`` into a password file,
    with ``allow_anonymous false``. ``tls``: a second listener on ``tls_port`` (a free port
    when 0) with that CA, certificate and key, optionally requiring client certificates.
    ``persistence``: sessions, queued QoS 1 messages and retained messages are saved in
    ``workdir`` on stop and reloaded on start. ``options``: more ``mosquitto.conf`` lines.
    """

    port: int
    workdir: Path
    nodelay: bool = True
    proc: subprocess.Popen[bytes] | None = None
    users: dict[str, str] | None = None
    tls: MosquittoTls | None = None
    tls_port: int = 0
    persistence: bool = False
    options: tuple[str, ...] = ()

    @property
    def log(self) -> Path:
        """Mosquitto's log file (appended to across restarts)."""
        return self.workdir / "mosquitto.log"

    def start(self) -> None:
        """Start and wait until every listener accepts. Raises StackError when mosquitto (or
        mosquitto_passwd, for ``users``) is missing or it does not start."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise StackError("mosquitto is not installed (apt-get install mosquitto)")
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {str(self.users is None).lower()}",
            f"persistence {str(self.persistence).lower()}",
            f"log_dest file {self.log}",
            f"set_tcp_nodelay {str(self.nodelay).lower()}",
            # Run as root stays root: dropping to "mosquitto" could not open files in workdir.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
        lines += self.options
        if self.users is not None:
            lines.append(f"password_file {self._password_file(self.users)}")
        if self.tls is not None:
            self.tls_port = self.tls_port or free_port()
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
            ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        if self.tls is not None:
            wait_for_port(self.tls_port, self.proc)

    def _password_file(self, users: dict[str, str]) -> Path:
        """Write ``users`` with ``mosquitto_passwd -b`` (hashed); returns the file."""
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not Path(tool).exists():
            raise StackError("mosquitto_passwd is not installed (apt-get install mosquitto)")
        path = self.workdir / "mosquitto.passwd"
        path.unlink(missing_ok=True)
        for i, (user, password) in enumerate(users.items()):
            create = ["-c"] if i == 0 else []
            done = subprocess.run(
                [tool, *create, "-b", str(path), user, password], capture_output=True
            )
            if done.returncode != 0:  # the output names the file and user, not the password
                raise StackError(f"mosquitto_passwd failed for user {user!r}: {done.stderr!r}")
        return path

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener's files: the CA that signed client certificates (and the server's),
    the server certificate and key; ``require_certificate``: clients must present one."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


@dataclass
class LocalServer:
    """``edgespeak serve --config CONFIG``; the config's ``[server] port`` must be set."""

    config: Path
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start it; return the ``ws://…/v1/tts/live`` URL it printed once listening."""
        self.proc = subprocess.Popen(
            edgespeak_command("serve", "--config", str(self.config)),
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            env=self.env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise StackError(f"edgespeak serve did not start (see {self.log}): {line!r}")
        return line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> None:
        stop_process(self.proc)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus ``EDGESPEAK_*`` overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESPEAK_")}
    return env | extra


def capture_alsa_conf(
    conf: Path, output: Path, *, file_format: str = "raw", pulse_server: str | None = None
) -> dict[str, str]:
    """Write an ALSA config whose ``default`` PCM goes to a ``file`` PCM over ``null``:
    every byte handed to ALSA lands in ``output`` (``raw`` bytes, or a ``wav`` file whose
    header is completed when the PCM is closed). With ``pulse_server`` (see
    :attr:`PulseAudio.server`) the file PCM's slave is that server's null sink instead: the
    capture is still byte-exact, and playback is paced in real time. Returns the env
    selecting it."""
    slave = f'{{ type pulse server "{pulse_server}" }}' if pulse_server else '"null"'
    conf.write_text(
        f"pcm.capture {{\n type file\n slave.pcm {slave}\n"
        f' file "{output}"\n format "{file_format}"\n}}\n'
        'pcm.!default {\n type plug\n slave.pcm "capture"\n}\n'
    )
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}


def has_sound_card() -> bool:
    """True when ALSA sees at least one sound card."""
    import alsaaudio

    try:
        return bool(alsaaudio.cards())
    except alsaaudio.ALSAAudioError:
        return False


@dataclass
class PulseAudio:
    """A private PulseAudio server with a null sink on the unix socket ``workdir/pulse.sock``:
    ALSA ``type pulse`` PCMs on it (``server "unix:…"``) play paced in real time, no card needed.

    A low-latency keep-alive stream (``pacat`` playing silence) keeps the null sink rendering in
    small blocks: left idle, it renders 2 s blocks, and a new stream measured a ~1.9 s stall
    before its first frame was consumed. :meth:`start` returns once the sink's latency is below
    ``READY_LATENCY_US``.
    """

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    keepalive: subprocess.Popen[bytes] | None = None

    READY_LATENCY_US = 50_000
    SINK = "edgespeak_null"

    @property
    def socket(self) -> Path:
        return self.workdir / "pulse.sock"

    @property
    def server(self) -> str:
        """The server address for ``PULSE_SERVER`` or the ALSA pulse PCM's ``server``."""
        return f"unix:{self.socket}"

    @property
    def log(self) -> Path:
        return self.workdir / "pulseaudio.log"

    def _env(self) -> dict[str, str]:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        return clean_env(
            HOME=str(home), XDG_RUNTIME_DIR=str(home), XDG_CONFIG_HOME=str(home),
            PULSE_SERVER=self.server,
        )  # fmt: skip

    def start(self, timeout_s: float = STARTUP_S) -> None:
        """Start the server and the keep-alive stream; wait until the sink runs at low
        latency. Raises StackError (with the server's log) when that fails."""
        binary = shutil.which("pulseaudio") or "/usr/bin/pulseaudio"
        pacat = shutil.which("pacat") or "/usr/bin/pacat"
        for path, package in ((binary, "pulseaudio"), (pacat, "pulseaudio-utils")):
            if not Path(path).exists():
                raise StackError(f"{path} is not installed (apt-get install {package})")
        conf = self.workdir / "pa.conf"
        conf.write_text(
            f"load-module module-null-sink sink_name={self.SINK}\n"
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
        )
        env = self._env()
        self.proc = subprocess.Popen(
            [binary, "-n", "-F", str(conf), "--daemonize=no", "--exit-idle-time=-1",
             "--use-pid-file=no", f"--log-target=file:{self.log}", "--log-level=info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        self._wait(deadline, self._accepting)
        with open(os.devnull, "rb") as devnull, open("/dev/zero", "rb") as zero:
            self.keepalive = subprocess.Popen(
                [pacat, "--playback", "--raw", "--format=s16le", "--channels=1", "--rate=8000",
                 "--latency-msec=20", f"--device={self.SINK}", "--client-name=keepalive"],
                stdin=zero, stdout=subprocess.DEVNULL, stderr=devnull, env=env,
            )  # fmt: skip
        self._wait(deadline, self._low_latency)

    def _accepting(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            return True
        return False

    def _low_latency(self) -> bool:
        if self.keepalive is not None and self.keepalive.poll() is not None:
            raise StackError(f"pacat exited with {self.keepalive.returncode}\n{self.log_text()}")
        out = subprocess.run(
            ["pactl", "list", "sinks"], capture_output=True, text=True, env=self._env()
        ).stdout
        found = re.search(r"Latency: (\d+) usec, configured (\d+) usec", out)
        return found is not None and all(int(v) < self.READY_LATENCY_US for v in found.groups())

    def _wait(self, deadline: float, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(
                    f"pulseaudio exited with {self.proc.returncode}\n{self.log_text()}"
                )
            if ready():
                return
            time.sleep(0.02)  # polls the real condition, bounded by the deadline
        raise StackError(f"PulseAudio not ready: {ready.__name__}\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def stop(self) -> None:
        stop_process(self.keepalive)
        stop_process(self.proc)
