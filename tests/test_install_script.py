"""scripts/install, checked with the real tools: ``bash -n``, ``shellcheck`` and runs without
root that must refuse before touching anything."""

from __future__ import annotations

import os
import shutil
import subprocess

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


def run_install_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
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
