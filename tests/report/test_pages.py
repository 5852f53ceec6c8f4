"""Pages from jinja2 templates: autoescaped, one stylesheet shared by the index and the comparison page."""
from labkit.report import pages


def test_render_escapes_what_it_is_given(tmp_path):
    result = {"a": "<script>alert(1)</script>", "b": "b & c", "kind": "notebook", "notebooks": {},
              "notebooks_only_a": [], "notebooks_only_b": [], "changed": False, "significant": False}
    page = pages.render("compare.html.j2", result=result, figure="", pct=str, points=str, short=str)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "b &amp; c" in page and pages.stylesheet() in page


def test_one_stylesheet_for_every_page():
    css = pages.stylesheet()
    assert "font-family" in css and "tr.failed td" in css and "tr.significant td" in css
