"""The sandbox the systemd units ask for (SystemCallFilter=, RestrictAddressFamilies=,
MemoryDenyWriteExecute=), rebuilt with libseccomp the way systemd builds it, with the daemon's
stack run under it: imports, numpy/soxr, libopus, libffi, alsa-lib, sqlite, aiohttp over TCP, an
espeak-ng child, and the ESPHome libraries."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.test_units import (
    ROOT,
    SYSTEMD_ANALYZE,
    UNITS,
    analyze,
    require,
    values,
)

# --- the sandbox, rebuilt with libseccomp ----------------------------------------------------


class _ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: group name → members (names and @groups)."""
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(item: str, groups: dict[str, list[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item}
    return set().union(*(expand(member, groups) for member in groups[item]))


def allowed_syscalls(name: str) -> set[str]:
    """The allow-list the unit's SystemCallFilter= lines build, in order (systemd.exec(5)):
    the first line without ``~`` starts an allow-list, a ``~`` line removes from it."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in values(name, "SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(expand(i, groups) for i in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


SANDBOX = r"""
import ctypes, os, sys
sys.path.insert(0, sys.argv[1])
from tests.test_units_sandbox import load_sandbox
load_sandbox(sys.argv[2].split(","), [int(f) for f in sys.argv[3].split(",")])
os.execv(sys.argv[4], sys.argv[4:])
"""

STACK = r"""
import asyncio, ctypes, mmap, socket, sqlite3, subprocess, sys, tempfile
# The rules are in force:
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MemoryDenyWriteExecute rule not in force")
except PermissionError:
    pass
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sys.exit("RestrictAddressFamilies rule not in force")
except OSError:
    pass
try:
    import os; os.setuid(0)
    sys.exit("SystemCallFilter=~@privileged not in force")
except PermissionError:
    pass

import numpy, soxr, ormsgpack, opuslib_next, alsaaudio, aiohttp, aiomqtt, pydantic
import edgespeak.daemon, edgespeak.server.app, edgespeak.cli.main
import edgespeak.base.systemd, edgespeak.base.logs

x = numpy.sin(numpy.arange(48000, dtype=numpy.float32) / 10)
assert len(soxr.resample(x, 48000, 22050)) == 22050
assert ormsgpack.unpackb(ormsgpack.packb({"a": [1, 2]})) == {"a": [1, 2]}
packet = opuslib_next.Encoder(48000, 1, opuslib_next.APPLICATION_AUDIO).encode(bytes(1920), 960)
assert len(opuslib_next.Decoder(48000, 1).decode(packet, 960)) == 1920
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda v: v + 1)  # a libffi closure
assert callback(41) == 42
pcm = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device="null", rate=22050, channels=1,
                    format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=441)
pcm.write(bytes(882 * 4))
pcm.close()
with tempfile.TemporaryDirectory() as d:
    db = sqlite3.connect(f"{d}/index.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES ('x')")
    db.commit()
    db.close()
wav = subprocess.run(["espeak-ng", "--stdout", "testing"], capture_output=True, check=True)
assert len(wav.stdout) > 10000, len(wav.stdout)

async def http() -> None:
    from aiohttp import web
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="hello"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:  # getaddrinfo with AI_ADDRCONFIG
        async with session.get(f"http://localhost:{port}/") as response:
            assert await response.text() == "hello"
    await runner.cleanup()

asyncio.run(http())

# Piper (onnxruntime, its own espeak-ng): the server's default voice and a fallback voice.
from edgespeak.sources.piper import load_piper
from edgespeak.sources.voices import find_piper_voices
joe = load_piper(find_piper_voices().get("en_US-joe-medium"))
assert sum(len(pcm) for pcm in joe.sentences("Hello there. Goodbye.")) > 20000
print("stack ok")
"""


def load_sandbox(allowed: list[str], families: list[int]) -> None:
    """Install, in this process, the seccomp filters systemd 252 builds for
    ``SystemCallFilter=`` (allow-list, SystemCallErrorNumber=EPERM),
    ``RestrictAddressFamilies=`` (EAFNOSUPPORT) and ``MemoryDenyWriteExecute=`` (EPERM for
    mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC, shmat with
    SHM_EXEC; seccomp-util.c). Raises OSError when libseccomp is missing or refuses."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    allow, errno = 0x7FFF0000, 0x00050000  # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(0)
    masked_eq, eq, gt = 7, 4, 6  # enum scmp_compare

    def nr(name: str) -> int:
        return int(lib.seccomp_syscall_resolve_name(name.encode()))

    def add(ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        if nr(name) < 0:  # not a system call of this architecture
            return
        array = (_ArgCmp * max(len(cmps), 1))(*(_ArgCmp(*c) for c in cmps))
        if lib.seccomp_rule_add_array(ctx, action, nr(name), len(cmps), array) != 0:
            raise OSError(f"seccomp_rule_add_array({name}) failed")

    def load(ctx: int) -> None:
        if lib.seccomp_load(ctx) != 0:
            raise OSError("seccomp_load failed")

    mdwe = lib.seccomp_init(allow)
    eperm = errno | 1
    prot_write, prot_exec, shm_exec = 0x2, 0x4, 0o100000
    add(mdwe, eperm, "mmap", (2, masked_eq, prot_write | prot_exec, prot_write | prot_exec))
    add(mdwe, eperm, "mmap2", (2, masked_eq, prot_write | prot_exec, prot_write | prot_exec))
    add(mdwe, eperm, "mprotect", (2, masked_eq, prot_exec, prot_exec))
    add(mdwe, eperm, "pkey_mprotect", (2, masked_eq, prot_exec, prot_exec))
    add(mdwe, eperm, "shmat", (2, masked_eq, shm_exec, shm_exec))
    load(mdwe)

    af = lib.seccomp_init(allow)
    eafnosupport = errno | 97
    top = max(families)
    for family in range(top):
        if family not in families:
            add(af, eafnosupport, "socket", (0, eq, family, 0))
    add(af, eafnosupport, "socket", (0, gt, top, 0))
    load(af)

    syscalls = lib.seccomp_init(eperm)  # last: seccomp() itself is not on the list
    for name in allowed:
        add(syscalls, allow, name)
    load(syscalls)


@pytest.fixture
def sandbox_ready() -> Iterator[None]:
    require(SYSTEMD_ANALYZE is not None, "systemd")  # the system call groups
    try:
        ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    except OSError:
        require(False, "libseccomp2")
    require(shutil.which("espeak-ng") is not None, "espeak-ng")
    yield


@pytest.mark.usefixtures("sandbox_ready")
@pytest.mark.parametrize("name", UNITS)
def test_stack_runs_in_the_units_sandbox(name: str) -> None:
    """MemoryDenyWriteExecute=yes, SystemCallFilter= and RestrictAddressFamilies= of the unit
    do not break numpy, soxr, libopus, libffi, alsa-lib, sqlite, aiohttp or espeak-ng (a child
    inherits the filters)."""
    numbers = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
    listed = " ".join(values(name, "RestrictAddressFamilies")).split()
    families = [numbers[family] for family in listed]
    assert values(name, "MemoryDenyWriteExecute") == ["yes"]
    assert values(name, "SystemCallErrorNumber") == ["EPERM"]
    allowed = allowed_syscalls(name)
    assert "execve" in allowed
    assert "setuid" not in allowed  # ~@privileged took it out again
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SANDBOX,
            str(ROOT),
            ",".join(sorted(allowed)),
            ",".join(map(str, families)),
            sys.executable,
            "-c",
            STACK,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("stack ok")


ESPHOME_STACK = r"""
# [esphome]: the protobuf classes, Noise (cryptography's X25519), mDNS's interface list
# (getifaddrs: AF_NETLINK) and miniaudio's cffi read callbacks.
import io, wave, ifaddr, miniaudio, zeroconf
from aioesphomeapi import api_pb2
from noise.connection import NoiseConnection
import edgespeak.inlets.esphome.server, edgespeak.inlets.esphome.noise, edgespeak.audio.pulled

assert api_pb2.HelloRequest(client_info="x").SerializeToString()
noise = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256")
noise.set_as_initiator(); noise.set_psks(bytes(32)); noise.set_prologue(b"x")
noise.start_handshake()
assert noise.write_message()
assert ifaddr.get_adapters()
wav = io.BytesIO()
with wave.open(wav, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(bytes(1600))
class Source(miniaudio.StreamableSource):
    def __init__(self, data): self.data = data
    def read(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out
stream = miniaudio.stream_any(Source(wav.getvalue()), nchannels=1, sample_rate=8000)
assert sum(len(chunk) for chunk in stream) == 800
print("esphome ok")
"""


@pytest.mark.usefixtures("sandbox_ready")
def test_the_esphome_libraries_run_in_the_daemons_sandbox() -> None:
    """``[esphome]``'s libraries under the daemon unit's rules: AF_NETLINK is listed for mDNS
    (getifaddrs), and cffi's callbacks need no writable executable memory."""
    numbers = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
    listed = " ".join(values("edgespeak.service", "RestrictAddressFamilies")).split()
    families = ",".join(str(numbers[family]) for family in listed)
    allowed = ",".join(sorted(allowed_syscalls("edgespeak.service")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SANDBOX, str(ROOT), allowed, families,
         sys.executable, "-c", ESPHOME_STACK],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("esphome ok")
