"""edgespeak.base.logs in a real subprocess whose stderr is a file named (or not) by
JOURNAL_STREAM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgespeak.base.logs import is_journal_stream, syslog_priority

ROOT = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}")

SCRIPT = """
import logging, sys
from edgespeak.base.logs import setup_logging
setup_logging(sys.argv[1])
log = logging.getLogger("edgespeak.test")
log.debug("debug line")
log.info("info line")
log.warning("warning line")
log.error("error line")
log.critical("critical line")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it broke")
log.info("first\\nsecond")
"""


def run_logging(tmp_path: Path, level: str, journal_stream: str | None) -> list[str]:
    """Run SCRIPT with stderr to a file; JOURNAL_STREAM is ``journal_stream`` with ``{dev}``
    and ``{ino}`` filled from that file (None: unset). Returns the stderr lines."""
    out = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(ROOT)
    with out.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        subprocess.run(
            [sys.executable, "-c", SCRIPT, level],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
            check=True,
            timeout=60,
        )
    return out.read_text(encoding="utf-8").splitlines()


def test_journald_lines_carry_the_priority_and_no_timestamp(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, "DEBUG", "{dev}:{ino}")
    assert lines[:5] == [
        "<7>edgespeak.test: debug line",
        "<6>edgespeak.test: info line",
        "<4>edgespeak.test: warning line",
        "<3>edgespeak.test: error line",
        "<2>edgespeak.test: critical line",
    ]
    assert not any(TIMESTAMP.search(line) for line in lines)
    # The traceback: every line keeps <3>, so `journalctl -p err` shows all of it.
    trace = lines[5:-2]
    assert trace[0] == "<3>edgespeak.test: it broke"
    assert trace[1] == "<3>Traceback (most recent call last):"
    assert trace[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(line.startswith("<3>") for line in trace)
    assert lines[-2:] == ["<6>edgespeak.test: first", "<6>second"]


def test_level_filters_under_journald(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, "WARNING", "{dev}:{ino}")
    assert lines[:3] == [
        "<4>edgespeak.test: warning line",
        "<3>edgespeak.test: error line",
        "<2>edgespeak.test: critical line",
    ]
    assert not any(line.startswith(("<6>", "<7>")) for line in lines)


@pytest.mark.parametrize("journal_stream", [None, "{dev}:{ino}9", "1:2", "garbage", ""])
def test_plain_lines_elsewhere(tmp_path: Path, journal_stream: str | None) -> None:
    lines = run_logging(tmp_path, "INFO", journal_stream)
    assert not any(re.match(r"<\d>", line) for line in lines)
    head = lines[:4]
    levels = ["INFO", "WARNING", "ERROR", "CRITICAL"]
    for line, level in zip(head, levels, strict=True):
        assert re.fullmatch(TIMESTAMP.pattern + rf" {level} edgespeak\.test: \w+ line", line)
    assert "debug line" not in "\n".join(lines)
    assert "Traceback (most recent call last):" in lines


def test_is_journal_stream(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as f:
        st = os.fstat(f.fileno())
        assert is_journal_stream(f.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal_stream(f.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:0"})
        assert not is_journal_stream(f.fileno(), {})
    assert not is_journal_stream(10_000, {"JOURNAL_STREAM": "1:2"})  # not an open fd


def test_syslog_priorities() -> None:
    expected = {5: 7, 10: 7, 15: 7, 20: 6, 25: 6, 30: 4, 40: 3, 50: 2, 60: 2}
    assert {n: syslog_priority(n) for n in expected} == expected
