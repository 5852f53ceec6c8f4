"""The sentences and labels that depend on numbers: one percent format, a skipped part."""
import math

import numpy as np

from labkit.text import is_number, percent, skipped, status_text


def test_is_number():
    assert is_number(0.5) and is_number(0) and is_number(np.float32(0.25)) and is_number(np.int64(3))
    assert is_number(math.inf)
    assert not is_number(None) and not is_number(math.nan) and not is_number(np.nan)
    assert not is_number("n/a") and not is_number([0.5]) and not is_number(object())


def test_percent():
    assert percent(0.5754) == "57.5 %"
    assert percent(0.5755, 2) == "57.55 %"
    assert percent(0.5754, sign=False) == "57.5"
    assert percent(0.8233, 2, sign=False) == "82.33"
    assert percent(1) == "100.0 %" and percent(0) == "0.0 %"
    assert percent(np.float64(0.125), 0) == "12 %"  # round half to even
    assert percent(None) == "n/a" and percent(math.nan) == "n/a" and percent(np.nan, 2) == "n/a"
    assert percent(None, sign=False) == "" and percent(math.nan, 2, sign=False) == ""


def test_skipped():
    assert skipped("(a)", "runs_optimizers") == "*(a): skipped (no runs in `runs_optimizers`).*"


def test_status_text_and_the_flags_agree():
    from labkit.results import FLAGS
    assert status_text("below_chance") == "below chance"
    assert FLAGS == {"at_chance": "AT CHANCE", "below_chance": "BELOW CHANCE", "diverged": "DIVERGED",
                     "failed": "FAILED"}
