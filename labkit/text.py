"""The few sentences and labels that depend on numbers or settings: percent formatting (one
definition), the weights banner, a skipped part's note. Fixed prose lives in the notebooks."""
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


def banner(weights: str, arch: str, extra: str = ""):
    """The visible box naming the weights in use; stand-in weights are never presented as ImageNet's."""
    from html import escape

    from IPython.display import HTML

    from labkit.models import describe_weights
    colour = "#d1e7dd" if weights == "imagenet" else "#fff3cd"
    text = escape(describe_weights(weights, arch)) + (f"<br>{escape(extra)}" if extra else "")
    return HTML(f"<div style='background:{colour};border:1px solid #999;padding:0.6em 1em;font-weight:600'>"
                f"Weights in use: {text}</div>")


def skipped(part: str, param: str) -> str:
    """The note a notebook shows for a part whose run list is empty."""
    return f"*{part}: skipped (no runs in `{param}`).*"


def status_text(status: str) -> str:
    """A run's status in prose: "at_chance" -> "at chance"."""
    return str(status).replace("_", " ")
