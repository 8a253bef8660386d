"""A private copy of this interpreter's shared objects, so that a process measured with it shares
no file pages with the other Python processes here (the TTS server, the benchmark itself,
anything else using the same libpython or venv).

PSS divides each shared page among the processes mapping it: a daemon next to ``edgespeak
serve`` from the same venv looks ~15 MiB smaller than it would on a Pi whose TTS server runs
elsewhere. :func:`private_python` builds, under a work directory, a venv whose extension
modules (``.so``) of edgespeak's run-time dependencies are copies and whose other files are
symlinks to this venv's (Python reads ``.py`` files, it does not map them), and a copy of
libpython for ``LD_LIBRARY_PATH`` (which
takes precedence over the interpreter's RUNPATH). The standard library's extension modules
(``lib-dynload``, ~1 MiB mapped) and system libraries (libc, OpenSSL, ALSA) stay shared, as
they would be on any machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9._-]+")


def runtime_objects(package: str = "edgespeak") -> set[Path]:
    """The shared objects (``.so``) of ``package``'s distribution and of everything it
    requires at run time, transitively (extras not included)."""
    seen: set[str] = set()
    wanted = [package]
    found: set[Path] = set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            if ".so" in file.name:
                found.add(Path(str(file.locate())).resolve())
        for requirement in dist.requires or ():
            if "extra ==" not in requirement and (match := _NAME.match(requirement)):
                wanted.append(match.group())
    return found


def _mirror(source: Path, target: Path, copies: set[Path]) -> None:
    """``target`` as ``source``: directories made, the files in ``copies`` copied, the rest
    symlinked."""
    for root, _, files in os.walk(source):
        here = target / Path(root).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            src = Path(root) / name
            if src.resolve() in copies:
                shutil.copy2(src, here / name)
            else:
                (here / name).symlink_to(src)


def private_python(work: Path) -> tuple[str, dict[str, str]]:
    """(path of a ``python`` to run, environment to add) for a process that maps its own
    copies of libpython and of the extension modules edgespeak may load. Raises RuntimeError
    when this interpreter is not in a venv."""
    if sys.prefix == sys.base_prefix:
        raise RuntimeError("run the benchmark from a venv (scripts/setup.sh makes .venv)")
    venv = Path(sys.prefix)
    root = work / "private-venv"
    if not root.exists():
        (root / "bin").mkdir(parents=True)
        shutil.copy2(venv / "pyvenv.cfg", root / "pyvenv.cfg")
        (root / "bin" / "python3").symlink_to(Path(sys.executable).resolve())
        copies = runtime_objects()
        for lib in ("lib", "lib64"):
            if (venv / lib).is_dir() and not (venv / lib).is_symlink():
                _mirror(venv / lib, root / lib, copies)
        libs = root / "libpython"
        libs.mkdir()
        name = sysconfig.get_config_var("INSTSONAME") or ""
        libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
        if name and (libdir / name).is_file():
            shutil.copy2(libdir / name, libs / name)
    return str(root / "bin" / "python3"), {"LD_LIBRARY_PATH": str(root / "libpython")}


UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgespeak.service"


def unit_python_env(cache_dir: Path) -> dict[str, str]:
    """The interpreter settings ``systemd/edgespeak.service`` gives the daemon: its
    ``Environment=`` assignments whose names start with ``PYTHON``, ``%C`` (the unit's cache
    root) replaced by ``cache_dir``. The daemon as shipped runs with them, and with no other
    (systemd starts it with a clean environment): ``PYTHONDONTWRITEBYTECODE``, which this
    machine's may set, is emptied unless the unit sets it."""
    env: dict[str, str] = {"PYTHONDONTWRITEBYTECODE": ""}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                name, _, value = item.partition("=")
                if name.startswith("PYTHON"):
                    env[name] = value.replace("%C", str(cache_dir))
    return env


def warm_bytecode(python: str, env: dict[str, str]) -> None:
    """Compile what the daemon imports into ``env``'s bytecode cache, as its first start does
    on a Pi: the later starts, the ones measured, find it there. Raises CalledProcessError."""
    subprocess.run([python, "-c", "import edgespeak.daemon"], env=env, check=True)
