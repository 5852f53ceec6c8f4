"""The sentences and labels that depend on numbers: one percent format, the weights banner, a skipped part."""
import math

import numpy as np
import pytest

from labkit.text import banner, is_number, percent, skipped, status_text


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


def test_banner_for_standin_weights_says_not_imagenet(isolated_root):
    pytest.importorskip("IPython")
    html = banner("standin-smoke", "resnet18").data  # the seconds-size stand-in, trained in the session's folder
    assert "NOT ImageNet" in html and "STAND-IN weights (standin-smoke): resnet18" in html
    assert "40-class synthetic source task" in html and "held-out top-1" in html
    assert "background:#fff3cd" in html and "#d1e7dd" not in html
    assert html.startswith("<div style=") and html.endswith("</div>")


def test_banner_for_imagenet_weights():
    pytest.importorskip("IPython")
    html = banner("imagenet", "resnet50", extra="input 224 px").data
    assert "background:#d1e7dd" in html and "#fff3cd" not in html
    assert "Weights in use: ImageNet-1k pretrained resnet50" in html and "NOT ImageNet" not in html
    assert html.endswith("<br>input 224 px</div>")


def test_banner_escapes_what_it_shows():
    pytest.importorskip("IPython")
    html = banner("/tmp/<b>weights</b>.pt", "resnet50", extra="a < b & c").data
    assert "/tmp/&lt;b&gt;weights&lt;/b&gt;.pt" in html and "<b>" not in html
    assert "<br>a &lt; b &amp; c</div>" in html
    assert "background:#fff3cd" in html  # anything but ImageNet's own weights gets the warning colour


def test_status_text_and_the_flags_agree():
    from labkit.results import FLAGS
    assert status_text("below_chance") == "below chance"
    assert FLAGS == {"at_chance": "AT CHANCE", "below_chance": "BELOW CHANCE", "diverged": "DIVERGED",
                     "failed": "FAILED"}
