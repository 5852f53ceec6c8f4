"""Progress on long waits: a live bar where someone watches it, sparse text lines where nobody does.

A terminal or JupyterLab gets a tqdm bar (a widget in JupyterLab). A log (stderr not a terminal, e.g.
CI) and a notebook run by the report runner (``LABKIT_PLAIN_PROGRESS=1``) get :class:`TextProgress`:
at most one line every ``SPARSE_SECONDS`` plus the final one, each starting with ``PLAIN_PREFIX`` so the
report runner can pick them out of a kernel's output and show them on its own line.
"""
from __future__ import annotations

import os
import sys
import time

PLAIN_PREFIX = "[progress] "
SPARSE_SECONDS = 10.0


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def in_notebook() -> bool:
    """True inside a running Jupyter kernel, where tqdm.auto draws a widget (stderr is no terminal there).
    Asks the running shell, not whether ipykernel was imported: a process that merely imported it (a test
    run, papermill's client) is no notebook."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def plain_wanted(stream=None) -> bool:
    """Sparse text lines rather than a bar: under the report runner, or when nobody watches the stream."""
    if os.environ.get("LABKIT_PLAIN_PROGRESS"):
        return True
    return not (in_notebook() or is_terminal(stream if stream is not None else sys.stderr))


def human(n: float, unit: str) -> str:
    """``2_600_000_000, "B"`` -> ``2.42GB`` (tqdm's ``format_sizeof``, binary multiples as its byte bars show
    them); other units as plain counts with thousands separators."""
    from tqdm import tqdm
    return tqdm.format_sizeof(n, "B", 1024) if unit == "B" else f"{n:,.0f} {unit}"


def clock(seconds: float) -> str:
    """``75.3`` -> ``01:15``; ``3725`` -> ``1:02:05`` (tqdm's ``format_interval``)."""
    from tqdm import tqdm
    return tqdm.format_interval(seconds)


class TextProgress:
    """The parts of tqdm's interface labkit uses (``n``, ``total``, ``initial``, ``update``, ``close``, a
    context manager), printing a line at most every ``interval`` seconds and one when closed."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0, file=None,
                 interval: float = SPARSE_SECONDS, clock_fn=time.monotonic):
        self.total, self.desc, self.unit, self.initial, self.n = total, desc, unit, initial, initial
        self.fp, self.interval, self._clock = file, interval, clock_fn  # fp: as tqdm names it
        self.started = self._last = clock_fn()
        self.closed = False

    def _line(self, final: bool) -> str:
        elapsed = self._clock() - self.started
        done = self.n - self.initial
        if self.unit == "B":  # 1.20 GB of 2.42 GB
            text = f"{PLAIN_PREFIX}{self.desc}: {human(self.n, 'B')}" + (
                f" of {human(self.total, 'B')}" if self.total else "")
        else:  # 9,850 of 25,000 files
            text = f"{PLAIN_PREFIX}{self.desc}: {self.n:,}" + (f" of {self.total:,}" if self.total else "") + \
                f" {self.unit}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f} %)"
        text += f", {clock(elapsed)}"
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            text += f", {human(rate, self.unit)}/s"
            if not final and self.total and self.n < self.total:
                text += f", about {clock((self.total - self.n) / rate)} left"
        if self.initial and final:
            text += f" (resumed at {human(self.initial, self.unit)})"
        return text

    def _print(self, final: bool = False) -> None:
        print(self._line(final), file=self.fp if self.fp is not None else sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print(final=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total: int | None, desc: str, *, unit: str = "it", initial: int = 0, file=None,
             plain: bool | None = None):
    """A bar (tqdm.auto: a widget in JupyterLab, text on a terminal) or, where ``plain`` (default:
    :func:`plain_wanted` for ``file``, stderr when None), a :class:`TextProgress`. Byte units scale (KB, MB)."""
    if plain if plain is not None else plain_wanted(file):
        if file is None and in_notebook():
            file = sys.stdout  # a kernel's stderr shows as an error box in the notebook and the report
        return TextProgress(total, desc, unit, initial, file)
    from tqdm.auto import tqdm
    byte_units = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=file, dynamic_ncols=True, **byte_units)


class StatusLine:
    """One line saying what runs and for how long, e.g. ``[q3] cell 7/22, 0:12``.

    On a terminal the line is rewritten in place (``\\r``) every ``tick`` seconds, so the elapsed time
    stays live during a long cell. In a log (CI) a line is printed when the text changed, at most one
    every ``interval`` seconds (one every ``heartbeat`` seconds while nothing changes), so a log holds
    a few lines per notebook, not one per cell. :meth:`finish` prints the final line either way.
    """

    def __init__(self, label: str, stream=None, tty: bool | None = None, tick: float = 1.0,
                 interval: float = SPARSE_SECONDS, heartbeat: float = 60.0, clock_fn=time.monotonic,
                 thread: bool = True):
        import threading
        self.label, self.stream = label, stream if stream is not None else sys.stdout
        self.tty = is_terminal(self.stream) if tty is None else tty
        self.interval, self.heartbeat, self._clock = interval, heartbeat, clock_fn
        self.started, self._printed_at, self.text, self._printed_text = clock_fn(), None, "starting", None
        self._width = 0  # of the last line drawn in place, to blank out what a shorter one leaves
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tick,), daemon=True) if thread else None
        self.tick()
        if self._thread is not None:
            self._thread.start()

    def render(self) -> str:
        return f"{self.label} {self.text}, {clock(self._clock() - self.started)}"

    def set(self, text: str) -> None:
        with self._lock:
            self.text = text
        self.tick()

    def tick(self) -> None:
        """Redraw the line on a terminal; in a log, print it when due (see the class docstring)."""
        with self._lock:
            now = self._clock()
            if self.tty:
                self._draw(self.render())
                return
            since = None if self._printed_at is None else now - self._printed_at
            changed = self.text != self._printed_text
            if since is None or (changed and since >= self.interval) or since >= self.heartbeat:
                self._printed_at, self._printed_text = now, self.text
                print(self.render(), file=self.stream, flush=True)

    def _draw(self, line: str, end: str = "") -> None:
        import shutil
        line = line[:max(20, shutil.get_terminal_size().columns - 1)]  # a wrapped line cannot be redrawn
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)) + end)
        self.stream.flush()
        self._width = 0 if end else len(line)

    def _run(self, tick: float) -> None:
        while not self._stop.wait(tick):
            self.tick()

    def finish(self, text: str) -> None:
        """Stop the live line and print ``label text`` as the notebook's final line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.tty:
                self._draw(f"{self.label} {text}", end="\n")
            else:
                print(f"{self.label} {text}", file=self.stream, flush=True)
