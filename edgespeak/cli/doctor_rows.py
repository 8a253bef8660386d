"""A row of ``edgespeak doctor``'s report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Result = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One row of the report: ``part`` checked, ``result``, what was seen, how to fix it."""

    part: str
    result: Result
    detail: str
    fix: str = ""
