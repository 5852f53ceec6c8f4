"""``make report``: run every notebook headless with papermill, render HTML (with and without code)
and PDF with nbconvert and a system Chromium, and build the index page (``labkit.report.index``)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import labkit
from labkit.questions import registry
from labkit.report.execute import run_notebook
from labkit.errors import LabkitError
from labkit.params import ParameterError, check_profile
from labkit.report.index import NotebookResult, build_index
from labkit.paths import atomic_write_text, environ_kept, git_commit, reports_dir
from labkit.progress import PLAIN_PREFIX, StatusLine

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_PDF_HINT = ("no PDF: no Chromium found. Install Debian's package (sudo apt-get install chromium) or set "
               "LABKIT_CHROMIUM to a Chrome/Chromium binary, then run the report again.")


class _CellProgress(logging.Handler):
    """Feeds papermill's log records to the notebook's :class:`StatusLine`: the running cell out of all,
    and the latest sparse progress line the kernel printed (e.g. a long decode's), if any."""

    def __init__(self, line: StatusLine, total: int):
        super().__init__(logging.INFO)
        self.line, self.total, self.cell, self.detail = line, total, None, ""

    def emit(self, record):
        msg = record.getMessage()
        lines = [ln for ln in msg.splitlines() if ln.startswith(PLAIN_PREFIX)] \
            if record.levelno == logging.INFO else []  # INFO: the kernel's stdout, as papermill logs it
        if msg.startswith("Executing Cell"):
            self.cell, self.detail = msg.split()[2].strip("-"), ""
        elif lines:
            self.detail = lines[-1][len(PLAIN_PREFIX):]
        else:
            return
        self.line.set(f"cell {self.cell}/{self.total}" + (f" · {self.detail}" if self.detail else ""))


def execute(key: str, out_dir: Path, params: dict, timeout: int | None = None,
            line: StatusLine | None = None) -> tuple[Path, str | None]:
    """Run one notebook with papermill (cwd notebooks/); return the executed copy and the error, if any.
    The executed copy is kept even when a cell fails, with the error in it. ``line`` shows the cell
    counter and elapsed time as the notebook runs."""
    import nbformat
    source = registry.notebooks_dir() / registry.NOTEBOOKS[key]
    registry.check_names(source, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / registry.NOTEBOOKS[key]
    total = len(nbformat.read(source, as_version=4).cells) + 1  # papermill adds the injected-parameters cell
    log = logging.getLogger("papermill")
    handler = _CellProgress(line, total) if line is not None else None
    if handler is not None:
        log.addHandler(handler)
    # Papermill's cell log feeds the status line, not the terminal; set for this run only and put back after,
    # so a caller (a test, a sweep) keeps its own logging and environment.
    saved = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with environ_kept({"LABKIT_PLAIN_PROGRESS"}):
            os.environ["LABKIT_PLAIN_PROGRESS"] = "1"  # inherited by the kernel: sparse text progress, no widgets
            run_notebook(source, executed, params, registry.notebooks_dir(), timeout, log_output=True)
        return executed, None
    except Exception as err:  # noqa: BLE001 - any failure marks this notebook failed, the others go on
        name = type(err).__name__
        detail = getattr(err, "evalue", None) or str(err).strip().splitlines()[-1:] or [""]
        return executed, f"{name}: {detail if isinstance(detail, str) else detail[0]}"
    finally:
        if handler is not None:
            log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _without_progress_lines(nb):
    """Drop the kernel's sparse progress lines (``PLAIN_PREFIX``) from stream outputs: they were for the
    terminal while it ran. The executed notebook keeps them, as a record of how long a decode took."""
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out.text = "".join(ln for ln in out.text.splitlines(keepends=True) if not ln.startswith(PLAIN_PREFIX))
                if not out.text:
                    continue
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept
    return nb


def render_html(executed: Path) -> tuple[Path, Path]:
    """Self-contained HTML (images embedded, no CDN scripts): one with code, one without input cells."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = _without_progress_lines(nbformat.read(executed, as_version=4))
    outputs = []
    for suffix, exclude_input in ((".html", False), (".report.html", True)):
        exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(Path(__file__).parent /
                                                                                        "templates")],
                                embed_images=True, exclude_input=exclude_input,
                                exclude_input_prompt=exclude_input, exclude_output_prompt=exclude_input)
        body, _ = exporter.from_notebook_node(nb)
        path = executed.with_suffix(suffix) if suffix == ".html" else executed.with_name(executed.stem + suffix)
        atomic_write_text(path, body)
        outputs.append(path)
    return outputs[0], outputs[1]


def find_chromium() -> str | None:
    if os.environ.get("LABKIT_CHROMIUM"):
        return os.environ["LABKIT_CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_ARGS = ["--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]


def chromium_args() -> list[str]:
    # Chromium's sandbox refuses to run as root (CI and containers run as root).
    return CHROMIUM_ARGS + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])


def print_pdfs(pages: list[tuple[Path, Path]]) -> None:
    """Print each (html, pdf) pair with headless Chromium through Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=chromium_args())
        try:
            page = browser.new_page()
            for html_path, pdf_path in pages:
                page.goto(html_path.resolve().as_uri(), wait_until="load")
                tmp = pdf_path.with_name(f".{pdf_path.name}.tmp")
                page.pdf(path=str(tmp), format="A4", print_background=True,
                         margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
                os.replace(tmp, pdf_path)
        finally:
            browser.close()


def merge_pdfs(parts: list[Path], out: Path) -> None:
    from pypdf import PdfWriter
    writer = PdfWriter()
    for p in parts:
        writer.append(str(p))
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as f:
        writer.write(f)
    os.replace(tmp, out)


ASK_ABOVE_SECONDS = 3600


class ReportCancelled(LabkitError):
    """The user said no to a long forecast."""


def announce(profile: str, keys: list[str], overrides: dict, yes: bool) -> dict[str, float]:
    """Print the forecast before anything runs; above an hour ask on a terminal (``yes`` skips the question),
    warn in a log and go on. Returns each notebook's forecast seconds."""
    from labkit.report.forecast import forecast
    fc = forecast(profile, keys, overrides=overrides, log=lambda line: print(f"plan: {line}", flush=True))
    print("\n".join(fc.describe()), flush=True)
    if fc.total_seconds > ASK_ABOVE_SECONDS and not yes:
        if sys.stdin.isatty():
            answer = input(f"This report is forecast to take {fc.total_seconds / 3600:.1f} h on this machine. "
                           f"Start it? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise ReportCancelled("not started (the forecast exceeds an hour); `make plan PROFILE=...` shows "
                                      "it, --yes (make report YES=1) starts without asking")
        else:
            print(f"WARNING: forecast {fc.total_seconds / 3600:.1f} h (over an hour); going on", flush=True)
    return {k: n.seconds for k, n in fc.notebooks.items()}


def make_report(profile: str = "demo", only: list[str] | None = None, timeout: int | None = None,
                out_root: Path | None = None, overrides: dict | None = None, yes: bool = False) -> int:
    """Run, render and index every notebook; return 0, or 1 when any notebook failed (named).
    ``overrides``: parameters over the profile's, for every notebook that declares them (e.g. weights)."""
    check_profile(profile)
    keys = only or registry.available()
    unknown = [k for k in keys if k not in registry.available()]
    if unknown:
        raise ParameterError(f"unknown notebook(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(registry.available())}")
    root = Path(out_root) if out_root else reports_dir(profile)
    root.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    results: list[NotebookResult] = []
    started = dt.datetime.now().astimezone()
    planned = {}
    for key in keys:  # every notebook's parameters are checked before the first one runs
        planned[key] = {**registry.load_params(profile, key), "profile": profile,
                        "output_dir": str((root / key).resolve())}
        if overrides:
            declared = registry.default_parameters(key)
            planned[key].update({k: v for k, v in overrides.items() if k in declared})
        registry.validate(key, planned[key])
    unused = set(overrides or {}) - {k for params in planned.values() for k in params}
    if unused:
        raise ParameterError(f"--set {', '.join(sorted(unused))}: no notebook of this report declares it")
    forecasts = announce(profile, keys, overrides or {}, yes)
    for key, params in planned.items():
        (root / key / "metrics.json").unlink(missing_ok=True)  # never show a stale result for a failed run
        line = StatusLine(f"[{key}] {registry.NOTEBOOKS[key]} (profile {profile}):")
        t = time.perf_counter()
        try:
            executed, error = execute(key, root / key, params, timeout, line)
        except BaseException:  # Ctrl-C: end the live line before the traceback or message
            line.finish("interrupted")
            raise
        r = NotebookResult(key, "failed" if error else "ok", error, time.perf_counter() - t, forecasts.get(key))
        line.finish(f"{'FAILED: ' + error if error else 'ok'} in {r.seconds:.0f} s")
        if executed.exists():
            code_html, clean_html = render_html(executed)
            r.files = {"notebook": f"{key}/{executed.name}", "HTML with code": f"{key}/{code_html.name}",
                       "HTML report": f"{key}/{clean_html.name}"}
        results.append(r)
    written = {r.key: json.loads((root / r.key / "metrics.json").read_text())
               for r in results if (root / r.key / "metrics.json").exists()}
    facts = {"profile": profile, "date": started.isoformat(timespec="seconds"),
             "devices": ", ".join(sorted({f"{m['device']} ({m.get('device_name', '?')})"
                                          for m in written.values()})) or "n/a",
             "weights": "; ".join(f"{key}: {m['weights']}" for key, m in written.items()) or "n/a",
             "torch": __import__("torch").__version__, "labkit": labkit.__version__, "git commit": git_commit(),
             "python": sys.version.split()[0],
             "durations": ", ".join(f"{r.key} {r.seconds:.0f} s (forecast {r.forecast_seconds:.0f} s)"
                                    if r.forecast_seconds is not None else f"{r.key} {r.seconds:.0f} s"
                                    for r in results)}
    if chromium:
        pages = []
        for r in results:
            if "HTML report" in r.files:
                pdf = root / r.files["HTML report"].replace(".report.html", ".pdf")
                pages.append((root / r.files["HTML report"], pdf))
                r.files["PDF"] = str(pdf.relative_to(root))
        index = build_index(root, profile, results, written, facts)
        pages.append((index, root / "index.pdf"))
        print_pdfs(pages)
        merge_pdfs([root / "index.pdf"] + [p for _, p in pages[:-1]], root / "report.pdf")
        print(f"PDF: {root / 'report.pdf'}", flush=True)
    else:
        build_index(root, profile, results, written, facts)
        print(NO_PDF_HINT, flush=True)
    atomic_write_text(root / "run.json", json.dumps({"facts": facts, "notebooks": [asdict(r) for r in results]},
                                                    indent=1))
    print(f"index: {root / 'index.html'}", flush=True)
    failed = [r.key for r in results if r.status == "failed"]
    if failed:
        print(f"FAILED notebook(s): {', '.join(failed)} (executed copies with the error are in {root})",
              file=sys.stderr, flush=True)
        return 1
    return 0
