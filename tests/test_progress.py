"""Progress output: bars where someone watches, sparse lines in logs, the live status line."""
import io

import pytest

from labkit import progress as pg


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_text_progress_prints_at_most_one_line_per_interval_and_a_final_one():
    clock, out = FakeClock(), io.StringIO()
    bar = pg.TextProgress(25_000, "decoding photos", unit="files", file=out, interval=10, clock_fn=clock)
    for _ in range(25):  # 25 s, 1,000 files a second
        clock.now += 1
        bar.update(1000)
    bar.close()
    bar.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 10 s, at 20 s, and the final line
    assert lines[0] == (f"{pg.PLAIN_PREFIX}decoding photos: 10,000 of 25,000 files (40 %), 00:10, 1,000 files/s, "
                        f"about 00:15 left")
    assert lines[-1] == f"{pg.PLAIN_PREFIX}decoding photos: 25,000 of 25,000 files (100 %), 00:25, 1,000 files/s"


def test_text_progress_in_bytes_says_where_it_resumed():
    clock, out = FakeClock(), io.StringIO()
    with pg.TextProgress(3 * 2**30, "stl10.tar.gz", unit="B", initial=2**30, file=out, clock_fn=clock) as bar:
        clock.now += 64
        bar.update(2 * 2**30)
    assert out.getvalue().splitlines()[-1] == (f"{pg.PLAIN_PREFIX}stl10.tar.gz: 3.00GB of 3.00GB (100 %), 01:04, "
                                               f"32.0MB/s (resumed at 1.00GB)")


@pytest.mark.parametrize("n, unit, text", [(0, "B", "0.00B"), (1023, "B", "1.00kB"), (1536, "B", "1.50kB"),
                                           (2.6e9, "B", "2.42GB"), (25000, "files", "25,000 files")])
def test_human(n, unit, text):
    assert pg.human(n, unit) == text


def test_clock():
    assert (pg.clock(0), pg.clock(75.9), pg.clock(3725)) == ("00:00", "01:15", "1:02:05")


def test_plain_under_the_report_runner_or_in_a_log(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)
    monkeypatch.setattr(pg, "in_notebook", lambda: False)
    assert pg.plain_wanted(io.StringIO()) and not pg.plain_wanted(Tty())
    from tqdm import tqdm
    assert isinstance(pg.progress(10, "x", file=Tty()), tqdm)
    monkeypatch.setattr(pg, "in_notebook", lambda: True)  # JupyterLab: stderr is no terminal, a widget draws
    assert not pg.plain_wanted(io.StringIO())
    monkeypatch.setenv("LABKIT_PLAIN_PROGRESS", "1")  # the report runner: text, on the kernel's stdout
    assert pg.plain_wanted(Tty())
    bar = pg.progress(10, "x")
    assert isinstance(bar, pg.TextProgress) and bar.fp is __import__("sys").stdout


def test_status_line_in_a_log_is_sparse():
    clock, out = FakeClock(), io.StringIO()
    line = pg.StatusLine("[q3]", out, tty=False, clock_fn=clock, thread=False)  # prints its first line
    for cell in range(1, 31):  # a cell a second for 30 s
        clock.now += 1
        line.set(f"cell {cell}/30")
    clock.now += 90  # a long last cell: a heartbeat after 60 s without a line
    line.tick()
    line.finish("ok in 120 s")
    assert out.getvalue().splitlines() == ["[q3] starting, 00:00", "[q3] cell 10/30, 00:10", "[q3] cell 20/30, 00:20",
                                           "[q3] cell 30/30, 00:30", "[q3] cell 30/30, 02:00", "[q3] ok in 120 s"]


def test_status_line_on_a_terminal_is_rewritten_in_place():
    clock, out = FakeClock(), io.StringIO()
    line = pg.StatusLine("[q3]", out, tty=True, clock_fn=clock, thread=False)
    clock.now += 12
    line.set("cell 12/30")
    line.finish("ok")
    assert out.getvalue() == ("\r[q3] starting, 00:00" "\r[q3] cell 12/30, 00:12"
                              "\r[q3] ok" + " " * (len("[q3] cell 12/30, 00:12") - len("[q3] ok")) + "\n")
    assert "\n" not in out.getvalue()[:-1]  # one line per notebook


def test_status_line_ticks_on_its_own():
    import time
    out = io.StringIO()
    line = pg.StatusLine("[q3]", out, tty=True, tick=0.01)
    deadline = time.monotonic() + 30  # polled, not slept: a loaded machine may run the ticking thread late
    while out.getvalue().count("\r[q3] starting") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    line.finish("ok")
    assert out.getvalue().count("\r[q3] starting") >= 3  # redrawn with the elapsed time while nothing happens


def test_a_process_that_merely_imported_ipykernel_is_no_notebook():
    """The suite's random order once put a test importing ipykernel before the progress tests: a test process
    must still get text lines, not a widget bar."""
    import ipykernel  # noqa: F401
    assert pg.in_notebook() is False
