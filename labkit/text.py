"""The few sentences and labels that depend on numbers or settings: percent formatting (one
definition), a skipped part's note, a status in prose. Fixed prose lives in the notebooks."""
from __future__ import annotations

import math


def is_number(value) -> bool:
    """True for a finite-or-infinite real number; False for None and NaN (a missing result)."""
    if value is None:
        return False
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def percent(value, digits: int = 1, sign: bool = True) -> str:
    """A fraction as a percentage for prose and tables: 0.5754 -> "57.5 %" ("57.5" with ``sign=False``);
    "n/a" ("" without the sign) for a missing value."""
    if not is_number(value):
        return "n/a" if sign else ""
    return f"{100 * float(value):.{digits}f}" + (" %" if sign else "")


def skipped(part: str, param: str) -> str:
    """The note a notebook shows for a part whose run list is empty."""
    return f"*{part}: skipped (no runs in `{param}`).*"


def status_text(status: str) -> str:
    """A run's status in prose: "at_chance" -> "at chance"."""
    return str(status).replace("_", " ")
