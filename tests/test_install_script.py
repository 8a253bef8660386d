"""scripts/install, checked with the real tools: ``bash -n``, ``shellcheck`` and runs without
root that must refuse before touching anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.test_units import ROOT, require

INSTALL = ROOT / "scripts" / "install"


def test_install_script_parses() -> None:
    assert os.access(INSTALL, os.X_OK), "scripts/install must be executable"
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_script_shellcheck() -> None:
    require(shutil.which("shellcheck") is not None, "shellcheck")
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(INSTALL)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_install_unprivileged(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """scripts/install without root: as root, dropped to user nobody with setpriv (util-linux);
    otherwise as the unprivileged user running the tests. Either way it cannot touch /etc or
    /opt, whatever goes wrong."""
    drop: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        require(setpriv is not None, "util-linux")
        assert setpriv is not None
        drop = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run(
        [*drop, str(INSTALL), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_install_script_help_options_and_root_check() -> None:
    ok = run_install_unprivileged("--help")
    assert ok.returncode == 0
    for option in ("--prefix", "--server", "--uninstall", "--purge"):
        assert option in ok.stdout
    bad = run_install_unprivileged("--frobnicate")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "unknown option: --frobnicate" in bad.stderr
    for prefix in ("relative/dir", "/", "/opt/with space", "/opt/50%"):
        bad_prefix = run_install_unprivileged("--prefix", prefix)
        assert bad_prefix.returncode == 2, prefix
        assert "--prefix must be an absolute path" in bad_prefix.stderr
    purge_alone = run_install_unprivileged("--purge")
    assert purge_alone.returncode == 2
    not_root = run_install_unprivileged("--server")
    assert (not_root.returncode, not_root.stdout) == (1, "")
    assert "run as root" in not_root.stderr


def test_the_piper_extra_is_refused_on_32_bit_arm_before_anything_else() -> None:
    """On armv7l (a fake ``uname`` first on PATH) ``--server`` and ``--piper`` say at once that
    Piper is not installed there and why; other machines get no such message."""
    with tempfile.TemporaryDirectory() as top:  # not under pytest's 0700 directory: the
        check_arm(Path(top))  # unprivileged user the script runs as must reach the fake


def check_arm(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uname").write_text(
        '#!/bin/sh\n[ "$1" = "-m" ] && echo armv7l || exec /bin/uname "$@"\n'
    )
    (fake / "uname").chmod(0o755)
    tmp_path.chmod(0o755)  # reachable by the unprivileged user the script runs as
    arm = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    for option in ("--server", "--piper"):
        refused = run_install_unprivileged(option, env=arm)
        assert refused.returncode == 1  # then the root check, as before
        assert "not installing the Piper voices: armv7l is a 32-bit OS" in refused.stderr
        assert "install a 64-bit Raspberry Pi OS (aarch64)" in refused.stderr
    plain = run_install_unprivileged("--server")
    assert "Piper" not in plain.stderr
    assert "Piper" not in run_install_unprivileged(env=arm).stderr  # the daemon alone: no extra
