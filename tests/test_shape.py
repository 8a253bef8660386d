"""The shape of the project: modules stay small, and the wheel holds only what a Pi runs.

The import direction between the rooms is checked by ``lint-imports`` (scripts/test.sh,
pyproject.toml ``[tool.importlinter]``), not here.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
CHECKED = ("edgespeak", "harness", "bench", "tests")


def test_no_module_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for folder in CHECKED
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_wheel_holds_the_package_and_its_sounds_not_the_harness(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("edgespeak-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"edgespeak", wheel.name.split("-py")[0] + ".dist-info"}, tops
    assert "edgespeak/sounds/doorbell.wav" in names
    assert "edgespeak/py.typed" in names
    assert "edgespeak/cli/main.py" in names
