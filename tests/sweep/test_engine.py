"""Sweeps on real Dask (no mocks): a local cluster, a scheduler and a worker started with the ``dask``
command, a worker killed mid-point, a rerun, and bad sweeps refused before anything runs. The notebooks
are tiny (a kernel start and a few lines) so the whole file stays fast."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import distributed  # noqa: F401 - see the note below
import nbformat
import pandas as pd
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labkit import cli
from labkit.questions import registry
from labkit.sweep.engine import grid_points, parse_value, point_name, sweep

# `distributed` is imported above so that its config defaults (distributed.*) are in dask.config before any
# test enters dask.config.set({"distributed...": ...}): entered before the import, that context records the
# whole `distributed` section as new and deletes it on exit, and every later sweep in this process fails
# with KeyError: 'distributed' (random test order made CI hit it).

TINY_PARAMS = """profile: str = "demo"  # profile
output_dir: str = None  # output folder
seed: int = 0  # the data split
seeds: list = [0]  # training seeds
x: float = 0.5  # the swept value
hold: str = ""  # a file: the first point that finds it missing writes its worker's pid there and waits"""
TINY_BODY = """import os, time
from pathlib import Path
if hold and not Path(hold).exists():
    Path(hold).write_text(str(os.getppid()))  # the kernel's parent is the Dask worker running this point
    time.sleep(120)
accuracy = round(x + 0.1 * seeds[0], 6)
if accuracy > 1:
    raise ValueError(f"accuracy {accuracy} above 1")
from labkit.results import Results
r = Results("tiny", profile, "none", "cpu", {"x": x, "seed": seed, "seeds": seeds}, output_dir)
r.add_run("only", accuracy, status="ok")
Path(output_dir, "figure.png").write_bytes(b"not really a png")
r.write()"""


def _notebook(path: Path, params: str, body: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A project root with ``tiny`` (declares seeds) and ``plain`` (does not)."""
    params = tmp_path / "notebooks" / "params" / "smoke"
    params.mkdir(parents=True)
    _notebook(tmp_path / "notebooks" / "tiny.ipynb", TINY_PARAMS, TINY_BODY)
    _notebook(tmp_path / "notebooks" / "plain.ipynb", 'profile: str = "demo"  # profile\n'
              'output_dir: str = None  # output folder\nseed: int = 0  # split', "print(seed)")
    for key in ("tiny", "plain"):
        (params / f"{key}.yaml").write_text("profile: smoke\n")
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    monkeypatch.setattr(registry, "NOTEBOOKS", {"tiny": "tiny.ipynb", "plain": "plain.ipynb"})
    monkeypatch.setattr(registry, "QUESTIONS", {key: registry.Entry(key, f"{key}.ipynb", None) for key in ("tiny", "plain")})
    return tmp_path


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_local_cluster_sweep_writes_every_file(tiny):
    threads = os.environ.get("OMP_NUM_THREADS")
    assert cli.main(["sweep", "tiny", "-p", "x", "0.25", "0.5", "-p", "seed", "0", "1", "--jobs", "2",
                     "--profile", "smoke"]) == 0
    assert os.environ.get("OMP_NUM_THREADS") == threads  # Dask's nanny settings do not stay in the client
    root = tiny / "reports" / "smoke" / "sweeps" / "tiny"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == ["x=0.25_seed=0", "x=0.25_seed=1", "x=0.5_seed=0", "x=0.5_seed=1"]
    for name in folders:
        for f in ("tiny.ipynb", "metrics.json", "figure.png", "point.json"):
            assert (root / name / f).stat().st_size > 0, (name, f)
        assert json.loads((root / name / "point.json").read_text())["status"] == "ok"
        x, seed = (v.split("=")[1] for v in name.split("_"))
        assert _metrics(root / name)["params"]["x"] == float(x) and _metrics(root / name)["params"]["seed"] == int(seed)
    table = pd.read_csv(root / "sweep.csv")
    assert list(table.columns[:5]) == ["x", "seed", "run", "accuracy", "status"] and len(table) == 4
    assert set(table["status"]) == {"ok"} and sorted(table["accuracy"]) == [0.25, 0.25, 0.5, 0.5]
    assert len(pd.read_csv(root / "comparison.csv")) == 4
    assert (root / "comparison.png").read_bytes().startswith(b"\x89PNG")
    page = (root / "sweep.html").read_text()
    assert "x=0.25_seed=1/tiny.ipynb" in page and "data:image/png;base64," in page
    from labkit.report.index import build_index
    build_index(tiny / "reports" / "smoke", "smoke", [], {}, {})
    assert "href='sweeps/tiny/sweep.html'" in (tiny / "reports" / "smoke" / "index.html").read_text()


def test_seeds_and_a_failing_point_in_the_comparison(tiny, capfd):
    table = sweep("tiny", {"x": [0.5, 0.95]}, profile="smoke", seeds=2, jobs=2)
    assert "without encryption" not in "".join(capfd.readouterr())  # the points' kernels use Unix sockets
    assert list(table["status"]) == ["ok", "ok", "ok", "failed"]
    assert "ValueError: accuracy 1.05 above 1" in table["error"].iloc[3]
    root = tiny / "reports" / "smoke" / "sweeps" / "tiny"
    assert (root / "x=0.95_seeds=1" / "tiny.ipynb").exists()  # kept, with its error
    m = _metrics(root / "x=0.5_seeds=1")["params"]
    assert m["seeds"] == [1] and m["seed"] == 0  # the training seed varies, the split stays
    comparison = pd.read_csv(root / "comparison.csv").set_index("x")
    assert comparison.loc[0.5, "accuracy_mean"] == pytest.approx(0.55)
    assert comparison.loc[0.5, "accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert comparison.loc[0.5, "count"] == 2 and comparison.loc[0.5, "failed"] == 0
    assert comparison.loc[0.95, "accuracy_mean"] == pytest.approx(0.95)
    assert pd.isna(comparison.loc[0.95, "accuracy_std"])
    assert comparison.loc[0.95, "count"] == 1 and comparison.loc[0.95, "failed"] == 1


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_scheduler_and_a_worker_started_with_dask_give_the_local_results(tiny):
    dask_cmd = [sys.executable, "-m", "dask"]  # the `dask` command of this environment
    scheduler_file = tiny / "scheduler.json"
    logs = open(tiny / "dask.log", "w")
    scheduler = subprocess.Popen(dask_cmd + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                             "--scheduler-file", str(scheduler_file)], stdout=logs, stderr=logs)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen(dask_cmd + ["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                              "--no-dashboard", "--name", "remote"], stdout=logs, stderr=logs)
        grid = {"x": [0.25, 0.5]}
        remote = sweep("tiny", grid, profile="smoke", seeds=1, scheduler=address, out_root=tiny / "remote")
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                _stop(proc)
        logs.close()
    local = sweep("tiny", grid, profile="smoke", seeds=1, jobs=2, out_root=tiny / "local")
    pd.testing.assert_frame_equal(remote, local)
    for name in ("sweep.csv", "comparison.csv"):
        assert (tiny / "remote" / name).read_text() == (tiny / "local" / name).read_text()
    workers = {json.loads((tiny / "remote" / p / "point.json").read_text())["worker"] for p in ("x=0.25_seeds=0",
                                                                                                "x=0.5_seeds=0")}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)


def test_a_killed_worker_gets_its_point_retried(tiny, capsys):
    hold = tiny / "hold.pid"
    (tiny / "notebooks" / "params" / "smoke" / "tiny.yaml").write_text(f"profile: smoke\nhold: {hold}\n")
    result = {}
    runner = threading.Thread(target=lambda: result.update(table=sweep("tiny", {"x": [0.25, 0.5]}, "smoke", jobs=2)))
    runner.start()
    try:
        deadline, pid = time.monotonic() + 60, None
        while pid is None and time.monotonic() < deadline:
            text = hold.read_text().strip() if hold.exists() else ""
            pid = int(text) if text else None
            time.sleep(0.1)
        assert pid is not None, "no point started"
        # only ever a worker process of this test's own cluster, never the test process itself
        assert pid != os.getpid() and pid in {c.pid for c in psutil.Process().children(recursive=True)}
        os.kill(pid, signal.SIGKILL)
    finally:
        runner.join(timeout=120)
    assert not runner.is_alive()
    table = result["table"]
    assert list(table["status"]) == ["ok", "ok"] and list(table["accuracy"]) == [0.25, 0.5]
    assert "left the cluster; back in the queue: x=" in capsys.readouterr().out


def test_a_rerun_runs_nothing_and_rebuilds_the_same_tables(tiny, capsys):
    root = tiny / "reports" / "smoke" / "sweeps" / "tiny"
    sweep("tiny", {"x": [0.25, 0.5]}, "smoke", jobs=1)
    tables = {n: (root / n).read_bytes() for n in ("sweep.csv", "comparison.csv")}
    executed = {p: p.stat().st_mtime_ns for p in root.glob("*/tiny.ipynb")}
    (root / "sweep.csv").unlink()
    capsys.readouterr()
    assert cli.main(["sweep", "tiny", "-p", "x", "0.25", "0.5", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "2 already done, 0 to run" in out and "cluster:" not in out
    assert {n: (root / n).read_bytes() for n in tables} == tables
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/tiny.ipynb")} == executed
    # the key, not the folder's existence, decides: a point recorded under another key runs again
    record = json.loads((root / "x=0.5" / "point.json").read_text())
    (root / "x=0.5" / "point.json").write_text(json.dumps({**record, "key": "older-code"}))
    sweep("tiny", {"x": [0.25, 0.5]}, "smoke", jobs=1)
    assert "1 already done, 1 to run" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["tiny", "-p", "learning_rate", "1"], "tiny.ipynb: unknown parameter(s) 'learning_rate'; allowed:"),
    (["q9", "-p", "x", "1"], "unknown notebook 'q9'; allowed: tiny, plain"),
    (["plain", "--seeds", "2"], "plain.ipynb has no 'seeds' parameter"),
    (["tiny", "-p", "x", "1", "--scheduler", "tcp://127.0.0.1:{port}"], "cannot reach the Dask scheduler at"),
])
def test_a_bad_sweep_fails_before_anything_runs(tiny, capsys, args, message):
    args = [a.format(port=_free_port()) for a in args]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert cli.main(["sweep", *args, "--profile", "smoke"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tiny / "reports").exists()


def test_sweep_values_are_typed():
    assert parse_value("1e-3") == 0.001 and parse_value("64") == 64 and parse_value("[0.9, 0.999]") == [0.9, 0.999]
    assert parse_value("adam") == "adam"
    points = grid_points({"lr": [0.1, 0.01], "batch_size": [16]}, seeds=2)
    assert len(points) == 4 and points[1] == {"lr": 0.1, "batch_size": 16, "seeds": [1]}
    assert point_name({"lr": 0.001, "betas": [0.9, 0.99]}) == "lr=0.001_betas=0.9,0.99"


def test_every_points_values_are_checked_before_anything_runs():
    """A bad value fails here, for the point that has it, not inside that point's first cell after a kernel start."""
    from labkit.params import ParameterError
    from labkit.sweep.engine import plan
    points, _ = plan("q3", {"lr": [1e-3]}, "smoke", None)  # the checkout's real notebook
    assert [p.name for p in points] == ["lr=0.001"]
    with pytest.raises(ParameterError, match=r"point lr=-1\.0: q3_dogs_vs_cats_optimizers.ipynb: .*'lr'.*out of range"):
        plan("q3", {"lr": [1e-3, -1.0]}, "smoke", None)
    with pytest.raises(ParameterError, match=r"runs_order\[0\].*'momentun'"):
        plan("q3", {"runs_order": [[{"name": "x", "momentun": 0.9}]]}, "smoke", None)
