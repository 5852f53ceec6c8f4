import json
import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labkit.questions import registry
from labkit.report import pipeline as report
from labkit.questions.registry import NOTEBOOKS, available
from labkit.results import FLAGS


def test_smoke_report_produces_every_page(smoke_report, chromium):
    root, code = smoke_report
    assert code == 0
    for key in available():
        stem = NOTEBOOKS[key].removesuffix(".ipynb")
        for suffix in (".ipynb", ".html", ".report.html", ".pdf"):
            assert (root / key / f"{stem}{suffix}").stat().st_size > 0, (key, suffix)
        assert (root / key / "metrics.json").exists()
    for name in ("index.html", "summary.csv", "report.pdf", "run.json"):
        assert (root / name).stat().st_size > 0
    assert (root / "report.pdf").read_bytes().startswith(b"%PDF")


def _browse(page, url: str) -> dict:
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed request {r.url}"))
    page.goto(url, wait_until="load")
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.currentSrc.slice(0, 40), e.naturalWidth])")
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    return {"errors": errors, "images": images, "links": links}


def test_pages_load_offline_in_chromium(smoke_report, chromium):
    from playwright.sync_api import sync_playwright
    root, _ = smoke_report
    pages = [root / "index.html"] + sorted(root.glob("*/*.html"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=report.chromium_args())
        try:
            for path in pages:
                page = browser.new_page()
                # offline: any request that leaves the file system fails the test
                page.route("http*://**", lambda route: route.abort())
                seen = _browse(page, path.as_uri())
                assert seen["errors"] == [], (path.name, seen["errors"])
                for src, width in seen["images"]:
                    assert width > 0, (path.name, src)
                for href in seen["links"]:
                    parsed = urlparse(href)
                    if parsed.scheme == "file":
                        assert Path(unquote(parsed.path)).exists(), (path.name, href)
                page.close()
        finally:
            browser.close()
    index_links = _index_links(root)
    assert {f"{k}/{NOTEBOOKS[k].removesuffix('.ipynb')}.pdf" for k in available()} <= index_links


def _index_links(root: Path) -> set[str]:
    import re
    return set(re.findall(r"href='([^']+)'", (root / "index.html").read_text()))


def test_index_summary_has_our_numbers_beside_the_original(smoke_report):
    root, code = smoke_report
    assert code == 0  # with or without Chromium: a report whose notebooks all ran exits 0
    import pandas as pd
    summary = pd.read_csv(root / "summary.csv")
    q3 = summary[summary["notebook"] == "q3"].set_index("run")
    assert q3.loc["adam", "original"] == 0.8233
    metrics = json.loads((root / "q3" / "metrics.json").read_text())
    assert q3.loc["adam", "accuracy"] == pytest.approx(metrics["runs"]["adam"]["accuracy"])
    assert "BELOW CHANCE" in (root / "index.html").read_text() or (q3["status"] != "below_chance").all()


def _tiny_notebook(path: Path, body: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('profile: str = "demo"  # profile\noutput_dir: str = None  # output folder')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A project root with two tiny notebooks: one that works and one that fails."""
    (tmp_path / "notebooks" / "params" / "smoke").mkdir(parents=True)
    ok_body = ("from labkit.results import Results\n"
               "r = Results('good', profile, 'none', 'cpu', {'x': 1}, output_dir)\n"
               "r.add_run('only', 0.75, status='ok')\nr.write()\nprint('fine')")
    _tiny_notebook(tmp_path / "notebooks" / "good.ipynb", ok_body)
    _tiny_notebook(tmp_path / "notebooks" / "bad.ipynb", "raise RuntimeError('this notebook is broken')")
    for key in ("good", "bad"):
        (tmp_path / "notebooks" / "params" / "smoke" / f"{key}.yaml").write_text("profile: smoke\n")
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    monkeypatch.setattr(registry, "NOTEBOOKS", {"bad": "bad.ipynb", "good": "good.ipynb"})
    monkeypatch.setattr(registry, "QUESTIONS", {key: registry.Entry(key, f"{key}.ipynb", None) for key in ("bad", "good")})
    return tmp_path


def test_a_failing_notebook_is_kept_marked_and_named(tiny_project, capsys):
    code = report.make_report("smoke", out_root=tiny_project / "out")
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED notebook(s): bad" in err
    executed = nbformat.read(tiny_project / "out" / "bad" / "bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))
    assert (tiny_project / "out" / "bad" / "bad.html").exists()  # rendered with its error
    assert (tiny_project / "out" / "good" / "good.report.html").exists()  # the other still ran and rendered
    index = (tiny_project / "out" / "index.html").read_text()
    assert "FAILED" in index and "this notebook is broken" in index
    summary = (tiny_project / "out" / "summary.csv").read_text()
    assert "bad,(notebook failed)" in summary and "good,only,0.75" in summary
    assert summary.splitlines()[0] == "notebook,run,accuracy,ci_low,ci_high,status,original,train_seconds,weights,device"


def test_unknown_parameter_is_refused_before_running(tiny_project):
    (tiny_project / "notebooks" / "params" / "smoke" / "good.yaml").write_text("profile: smoke\nlearning_rate: 1\n")
    with pytest.raises(report.ParameterError, match=r"unknown parameter\(s\) 'learning_rate'"):
        report.make_report("smoke", only=["good"], out_root=tiny_project / "out")


def test_without_chromium_the_html_is_still_produced(tiny_project, monkeypatch, capsys):
    monkeypatch.setattr(report, "find_chromium", lambda: None)
    assert report.make_report("smoke", only=["good"], out_root=tiny_project / "out") == 0
    out = capsys.readouterr().out
    assert "no PDF" in out and "apt-get install chromium" in out
    assert (tiny_project / "out" / "good" / "good.report.html").exists()
    assert (tiny_project / "out" / "index.html").exists() and not list((tiny_project / "out").rglob("*.pdf"))


def test_a_bad_parameter_in_a_later_notebook_stops_before_anything_runs(tiny_project):
    (tiny_project / "notebooks" / "params" / "smoke" / "good.yaml").write_text("profile: smoke\nlearning_rate: 1\n")
    with pytest.raises(report.ParameterError, match=r"good.ipynb: unknown parameter\(s\) 'learning_rate'"):
        report.make_report("smoke", out_root=tiny_project / "out")  # "bad" comes first and must not have run
    assert not (tiny_project / "out" / "bad").exists()


def test_bad_values_in_a_question_notebook_are_caught_before_running():
    with pytest.raises(report.ParameterError, match=r"q3_dogs_vs_cats_optimizers.ipynb: run 'x': betas="):
        registry.validate("q3", {"profile": "smoke", "runs_betas": [{"name": "x", "betas": [0.9, 1.0]}]})
    with pytest.raises(report.ParameterError, match=r"q1_stl10_transfer.ipynb: .*'svm_c' = -1.0 is out of range"):
        registry.validate("q1", {"svm_c": -1.0})
    for key in available():
        for profile in ("demo", "smoke", "full"):
            registry.validate(key, registry.load_params(profile, key))  # every shipped profile file is valid


def test_every_status_but_ok_is_flagged_on_the_index(tiny_project):
    body = ("from labkit.results import Results\n"
            "r = Results('good', profile, 'none', 'cpu', {}, output_dir)\n"
            "for i, s in enumerate(['ok', 'at_chance', 'below_chance', 'diverged', 'failed']):\n"
            "    r.add_run(f'run_{s}', None if s in ('diverged', 'failed') else 0.5, status=s)\n"
            "r.write()")
    _tiny_notebook(tiny_project / "notebooks" / "good.ipynb", body)
    assert report.make_report("smoke", only=["good"], out_root=tiny_project / "out") == 0
    index = (tiny_project / "out" / "index.html").read_text()
    for status, flag in FLAGS.items():
        assert f"<tr class='{status}'>" in index and flag in index, status
    assert "<tr class='ok'>" in index


def test_one_line_per_notebook_and_no_tcp_warning(tiny_project, capfd):
    """Not a terminal (as in CI): a notebook shorter than ten seconds gives its first and its final line, not
    one per cell; and ipykernel's "running over TCP without encryption" warning, written by the kernel process
    straight to the inherited stderr, does not appear (the kernel talks over Unix sockets)."""
    assert report.make_report("smoke", only=["good"], out_root=tiny_project / "out") == 0
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err
    lines = [ln for ln in out.splitlines() if ln.startswith("[good]")]
    assert lines[0] == "[good] good.ipynb (profile smoke): starting, 00:00"
    assert lines[-1].startswith("[good] good.ipynb (profile smoke): ok in ") and len(lines) == 2, lines
    assert not list((tiny_project / "notebooks").glob("kernel*"))  # no sockets left beside the notebooks


class _Recorder:
    def __init__(self):
        self.texts = []

    def set(self, text):
        self.texts.append(text)


def test_the_live_line_counts_cells_and_shows_the_kernels_progress(tiny_project, monkeypatch):
    """Under the runner, labkit's progress in the kernel is sparse text on stdout: the runner shows its latest
    line beside the cell counter; the executed notebook keeps it, the rendered pages leave it out."""
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)  # execute sets it for the kernel
    _tiny_notebook(tiny_project / "notebooks" / "good.ipynb",
                   "from labkit.progress import progress\nprint('fine')\n"
                   "with progress(3000, 'decoding things', unit='files') as bar:\n    bar.update(3000)")
    line = _Recorder()
    papermill_log = logging.getLogger("papermill")
    before = papermill_log.level, papermill_log.propagate
    executed, error = report.execute("good", tiny_project / "out", {"profile": "smoke"}, line=line)
    assert error is None
    # the caller's environment and logging are as they were (the kernel alone got the plain-progress switch)
    assert "LABKIT_PLAIN_PROGRESS" not in os.environ
    assert (papermill_log.level, papermill_log.propagate) == before
    assert line.texts[:3] == ["cell 1/3", "cell 2/3", "cell 3/3"]
    assert line.texts[-1].startswith("cell 3/3 · decoding things: 3,000 of 3,000 files (100 %), 00:00")
    kept = "".join(o.get("text", "") for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))
    assert "fine\n" in kept and "[progress] decoding things" in kept
    code_html, clean_html = report.render_html(executed)
    assert "decoding things" not in clean_html.read_text() and "fine" in clean_html.read_text()


def _long_forecast(monkeypatch, seconds=4000.0):
    from labkit.report import forecast as fc
    plan = fc.NotebookPlan("q3", seconds, seconds / 2, seconds * 2, 1, 1, [], 0, [])
    monkeypatch.setattr(fc, "forecast", lambda *a, **k: fc.Forecast("cpu", "a CPU", {"q3": plan}))


def test_a_forecast_over_an_hour_asks_on_a_terminal(monkeypatch, capsys):
    _long_forecast(monkeypatch)
    monkeypatch.setattr(report.sys.stdin, "isatty", lambda: True)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    with pytest.raises(report.ReportCancelled, match="--yes"):
        report.announce("cpu", ["q3"], {}, yes=False)
    assert report.announce("cpu", ["q3"], {}, yes=False) == {"q3": 4000.0}
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked despite --yes"))
    assert report.announce("cpu", ["q3"], {}, yes=True) == {"q3": 4000.0}
    assert "forecast for profile cpu on a CPU: 66.8 min" in capsys.readouterr().out


def test_a_forecast_over_an_hour_warns_in_a_log_and_goes_on(monkeypatch, capsys):
    _long_forecast(monkeypatch)
    monkeypatch.setattr(report.sys.stdin, "isatty", lambda: False)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked in a log"))
    assert report.announce("cpu", ["q3"], {}, yes=False) == {"q3": 4000.0}
    assert "WARNING: forecast 1.1 h (over an hour); going on" in capsys.readouterr().out
    _long_forecast(monkeypatch, seconds=600.0)
    assert report.announce("cpu", ["q3"], {}, yes=False) == {"q3": 600.0}
    assert "WARNING" not in capsys.readouterr().out


def test_each_notebook_records_its_forecast_beside_its_real_time(smoke_report):
    root, _ = smoke_report
    run = json.loads((root / "run.json").read_text())
    for nb in run["notebooks"]:
        assert nb["forecast_seconds"] > 0 and nb["seconds"] > 0
        assert f"{nb['key']} {nb['seconds']:.0f} s (forecast {nb['forecast_seconds']:.0f} s)" in run["facts"]["durations"]
    index = (root / "index.html").read_text()
    assert f"forecast {run['notebooks'][0]['forecast_seconds']:.0f} s" in index


def test_a_parameter_set_for_the_report_reaches_the_notebooks_that_declare_it(tiny_project):
    with pytest.raises(report.ParameterError, match="--set nonsense: no notebook of this report declares it"):
        report.make_report("smoke", only=["good"], out_root=tiny_project / "out", overrides={"nonsense": 1})
