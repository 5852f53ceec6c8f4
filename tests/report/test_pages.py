"""Pages from jinja2 templates: autoescaped, one stylesheet shared by the index and the comparison page."""
import pytest

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


def test_banner_for_standin_weights_says_not_imagenet(isolated_root, monkeypatch, tmp_path):
    pytest.importorskip("IPython")
    from labkit.training.standin import prepare
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path / "fresh"))  # no stand-in prepared here yet
    with pytest.raises(FileNotFoundError, match=r"not prepared yet.*prepare\('standin-smoke', 'resnet50'\)"):
        pages.banner("standin-smoke", "resnet50")  # a display never trains: the setup cell prepares first
    prepare("standin-smoke", "resnet18")  # the seconds-size stand-in, trained once in the session's folder
    html = pages.banner("standin-smoke", "resnet18").data
    assert "NOT ImageNet" in html and "STAND-IN weights (standin-smoke): resnet18" in html
    assert "40-class synthetic source task" in html and "held-out top-1" in html
    assert "background:#fff3cd" in html and "#d1e7dd" not in html
    assert html.startswith("<div style=") and html.endswith("</div>")


def test_banner_for_imagenet_weights():
    pytest.importorskip("IPython")
    html = pages.banner("imagenet", "resnet50", extra="input 224 px").data
    assert "background:#d1e7dd" in html and "#fff3cd" not in html
    assert "Weights in use: ImageNet-1k pretrained resnet50" in html and "NOT ImageNet" not in html
    assert html.endswith("<br>input 224 px</div>")


def test_banner_escapes_what_it_shows():
    pytest.importorskip("IPython")
    html = pages.banner("/tmp/<b>weights</b>.pt", "resnet50", extra="a < b & c").data
    assert "/tmp/&lt;b&gt;weights&lt;/b&gt;.pt" in html and "<b>" not in html
    assert "<br>a &lt; b &amp; c</div>" in html
    assert "background:#fff3cd" in html  # anything but ImageNet's own weights gets the warning colour


def test_data_banner_flags_a_real_size_generated_set_only(isolated_root):
    pytest.importorskip("IPython")
    from labkit.data.real_size import generate_real_size
    from labkit.data.synthetic import write_stl10
    root, _ = generate_real_size("dogs-vs-cats", workers=1, per_class=1)
    html = pages.data_banner(root).data
    assert html.startswith("<div style='background:#f8d7da") and html.endswith("</div>")
    assert "GENERATED DATA, not the real dogs-vs-cats" in html and "The accuracies below are not results." in html
    assert "<code>labkit data --generate-real-size</code>" in html
    assert pages.data_banner(root / "train").data == html  # a data_dir naming the folder inside
    assert pages.data_banner(isolated_root / "data").data == ""  # real data: nothing shown
    demo = write_stl10(isolated_root / "demo", train_per_class=1, test_per_class=1)
    assert pages.data_banner(demo).data == ""  # the demo's sets are flagged by their weights banner and profile


def test_the_reduced_box_lists_the_reductions_and_nothing_for_the_full_profile():
    from labkit.questions.registry import resolved_parameters
    from labkit.report.pages import reduced_banner
    html = reduced_banner("q3", resolved_parameters("q3", "cpu")).data
    assert "Reduced against the original" in html and "image_size 64 (full: 128)" in html
    assert "notebooks/params/cpu/q3.yaml" in html
    assert reduced_banner("q3", resolved_parameters("q3", "full")).data == ""
