"""``python -m labkit sweep``: run a notebook over a grid of parameters (and training seeds) on Dask.

Every grid point is one papermill execution on a Dask worker (a local cluster, or an existing
cluster's scheduler); its files come back to the client, which writes them under
``reports/<profile>/sweeps/<nb>/<point>/`` with a ``point.json`` (status, error, key). The key is a
hash of the resolved parameters, the notebook's bytes and labkit's code fingerprint, so a rerun skips
the points already done and a code change reruns them. Then every run's metrics are collected into
``sweep.csv``, ``comparison.csv`` (mean, std and count over seeds), ``comparison.png`` and ``sweep.html``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
import yaml

from labkit.questions import registry
from labkit.sweep.cluster import GPU, client_for, local_gpus, needs_gpu
from labkit.params import ParameterError, check_profile
from labkit.paths import atomic_write_bytes, atomic_write_text, code_fingerprint, reports_dir
from labkit.progress import plain_wanted
from labkit.sweep.point import run_point
from labkit.sweep.tables import as_text, compare, plot_comparison, write_page

# A point whose task raises (a kernel that would not start, not a failing notebook) is tried again this
# many times; a worker that dies mid-point is handled by the scheduler (distributed.scheduler.allowed-failures).
RETRIES = 2


def parse_value(text: str):
    """Command-line values: integers, floats (1e-3 too), then YAML (true, [0.9, 0.999], strings)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def point_name(point: dict) -> str:
    text = "_".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (list, dict)) else v}"
                    for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "", text)


def grid_points(grid: dict[str, list], seeds: int | None = None) -> list[dict]:
    """The grid's points in order; with ``seeds`` = N, each repeated N times with ``seeds=[k]`` (the
    training seed; ``seed``, the data split, is left as set)."""
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    if seeds:
        points = [{**p, "seeds": [k]} for p in points for k in range(seeds)]
    return points


@dataclass
class Point:
    name: str  # its folder under the sweep root
    values: dict  # the swept values (grid and training seed)
    params: dict  # resolved: the profile's parameter file, the profile, the values (output_dir is the worker's)
    gpu: bool  # trains on CUDA: asks for the worker resource GPU=1


def point_key(notebook: str, params: dict, source: bytes, fingerprint: str) -> str:
    material = json.dumps({"notebook": notebook, "params": params, "code": fingerprint,
                           "source": hashlib.sha256(source).hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def plan(key: str, grid: dict[str, list], profile: str, seeds: int | None) -> tuple[list[Point], bytes]:
    """Check everything that can be checked before anything runs; return the points and the notebook."""
    if key not in registry.available():
        raise ParameterError(f"unknown notebook {key!r}; allowed: {', '.join(registry.available())}")
    check_profile(profile)
    if seeds is not None and seeds < 1:
        raise ParameterError(f"--seeds {seeds}: give a number of training seeds >= 1")
    if not grid and not seeds:
        raise ParameterError("a sweep needs at least one -p NAME VALUE [VALUE ...] or --seeds N")
    empty = [name for name, values in grid.items() if not values]
    if empty:
        raise ParameterError(f"-p {empty[0]}: give at least one value")
    if seeds and "seeds" in grid:
        raise ParameterError("give either --seeds N or -p seeds [..] [..], not both")
    path = registry.notebooks_dir() / registry.NOTEBOOKS[key]
    if seeds and "seeds" not in registry.default_parameters(key):
        raise ParameterError(f"{path.name} has no 'seeds' parameter (training seeds), so --seeds cannot set it; "
                             f"drop --seeds, or sweep one of its parameters with -p")
    base = registry.load_params(profile, key)
    values = grid_points(grid, seeds)
    points = []
    for v in values:
        params = {**base, "profile": profile, **v}
        params.pop("output_dir", None)  # each point's output folder is the worker's; the client places it
        try:  # every point's names and values, before anything runs (a -p lr -1 is refused here)
            registry.validate(key, params)
        except ParameterError as err:
            raise ParameterError(f"point {point_name(v)}: {err}") from None
        points.append(Point(point_name(v), v, params, needs_gpu(params)))
    names = [p.name for p in points]
    if len(set(names)) < len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise ParameterError(f"two points would share the folder {clash!r}; give values that differ in "
                             f"letters, digits or . , + - =")
    return points, path.read_bytes()


def _record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "point.json").read_text())
    except (OSError, ValueError):
        return None


def save_point(folder: Path, point: Point, outcome: dict, notebook: str, source: bytes) -> dict:
    """Replace the point's folder with the files that came back, and its ``point.json``."""
    error = outcome["error"]
    if not error and "metrics.json" not in outcome["files"]:
        error = "the notebook finished without writing metrics.json"
    if folder.exists():
        shutil.rmtree(folder)  # no stale figure of an earlier run stays beside the new ones
    folder.mkdir(parents=True)
    for rel, data in outcome["files"].items():
        if ".." in PurePosixPath(rel).parts or PurePosixPath(rel).is_absolute():
            continue  # only files inside the point's own folder
        atomic_write_bytes(folder / rel, data)
    fingerprint = outcome["fingerprint"]
    record = {"point": point.values, "status": "failed" if error else "ok", "error": error,
              "key": point_key(notebook, point.params, source, fingerprint), "code_fingerprint": fingerprint,
              "worker": outcome["worker"], "seconds": outcome["seconds"], "params": point.params,
              "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    atomic_write_text(folder / "point.json", json.dumps(record, indent=1, default=str) + "\n")
    return record


def _outcome_of(future) -> dict:
    """A finished future's result; an erred or cancelled one as a failed outcome with one line."""
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        from distributed.scheduler import KilledWorker
        err = future.exception()
        if isinstance(err, KilledWorker):
            error = ("KilledWorker: every worker that ran this point died (out of memory? killed?); "
                     "the scheduler gave up after distributed.scheduler.allowed-failures tries")
        else:
            error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[-1]}"
    else:
        error = f"the point was {future.status} by the scheduler"
    return {"error": error, "files": {}, "seconds": None, "worker": None, "fingerprint": code_fingerprint()}


@dataclass
class Progress:
    """One bar over points (done / running / failed, elapsed) on a terminal; a line per finished point."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    bar: object = None

    def __post_init__(self):
        if not plain_wanted(sys.stderr):
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc="points", unit="pt", dynamic_ncols=True)
            self.refresh()

    def refresh(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done - self.failed} ok, {self.running} running, {self.failed} failed")

    def line(self, text: str):
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def finished(self, name: str, record: dict):
        self.done += 1
        self.failed += record["status"] == "failed"
        state = f"FAILED: {record['error']}" if record["status"] == "failed" else \
            f"ok in {record['seconds']:.1f} s on {record['worker']}"
        self.line(f"  [{self.done}/{self.total}, {time.perf_counter() - self.started:.0f} s] {name}: {state}")
        if self.bar is not None:
            self.bar.update(1)
            self.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_points(client, todo: list[Point], root: Path, key: str, source: bytes, timeout: int | None,
               ask_gpu: bool) -> None:
    """Submit every point, save each one as it finishes; Ctrl-C cancels what is left (finished points stay)."""
    notebook = registry.NOTEBOOKS[key]
    futures = {client.submit(run_point, notebook, source, p.params, timeout, retries=RETRIES, pure=False,
                             key=f"labkit-{key}-{p.name}-{time.time_ns()}",
                             resources=GPU if ask_gpu and p.gpu else None): p for p in todo}
    names = {f.key: p.name for f, p in futures.items()}
    pending, progress, polled, processing, other_code = set(futures), Progress(len(todo)), 0.0, {}, set()
    try:
        while pending:
            ready = [f for f in pending if f.done()]
            for f in ready:
                pending.discard(f)
                p = futures[f]
                record = save_point(root / p.name, p, _outcome_of(f), key, source)
                progress.finished(p.name, record)
                f.release()  # its bytes are written: let the worker forget them
                if record["code_fingerprint"] != code_fingerprint() and record["worker"] not in other_code:
                    other_code.add(record["worker"])
                    progress.line(f"  note: worker {record['worker']} runs other labkit code (fingerprint "
                                  f"{record['code_fingerprint']}, here {code_fingerprint()}); its points are "
                                  f"keyed by its code and rerun once the workers run this checkout's labkit")
            if time.perf_counter() - polled > 1.0:
                # which worker runs which point, to count the running ones and to say when a worker
                # leaves (killed, out of memory) and its point goes back to the queue
                now = {w: [names[k] for k in ks if k in names] for w, ks in client.processing().items()}
                waiting = {names[f.key] for f in pending}
                for worker in set(processing) - set(now):
                    lost = [n for n in processing[worker] if n in waiting]
                    progress.line(f"  worker {worker} left the cluster" +
                                  (f"; back in the queue: {', '.join(lost)}" if lost else ""))
                processing, polled = now, time.perf_counter()
                progress.running = sum(len(v) for v in now.values())
                progress.refresh()
            if not ready:
                time.sleep(0.1)
    except KeyboardInterrupt:
        progress.close()
        print(f"\ninterrupted: {len(pending)} point(s) cancelled, {progress.done} finished and kept; "
              f"run the same command again to run only what is missing", file=sys.stderr, flush=True)
        raise  # closing the client releases the pending points (a local cluster is closed too)
    progress.close()


def collect(root: Path, points: list[Point]) -> pd.DataFrame:
    """One row per (point, run) from the points' folders, in grid order; failed points as one row each."""
    rows = []
    for p in points:
        record = _record(root / p.name)
        if record is None:
            continue  # not run (an interrupted sweep)
        values = {k: as_text(v) for k, v in p.values.items()}
        try:
            runs = json.loads((root / p.name / "metrics.json").read_text())["runs"] if record["status"] == "ok" \
                else None
        except (OSError, ValueError, KeyError):
            runs, record = None, {**record, "error": "its metrics.json is missing or unreadable; run it again"}
        if runs is None:
            rows.append({**values, "run": None, "accuracy": None, "status": "failed", "error": record["error"],
                         "point": p.name})
            continue
        rows += [{**values, "run": name, **metrics, "point": p.name} for name, metrics in runs.items()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    head = list(points[0].values) + ["run", "accuracy", "status"]
    tail = [c for c in ("error", "point") if c in table]
    return table[head + [c for c in table.columns if c not in head + tail] + tail]


def write_tables(root: Path, key: str, profile: str, points: list[Point],
                 grid: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = collect(root, points)
    keys = [k for k in grid if k != "seeds"]
    comparison = compare(table, keys)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.csv", table.to_csv(index=False))
    atomic_write_text(root / "comparison.csv", comparison.to_csv(index=False))
    if comparison.empty:
        (root / "comparison.png").unlink(missing_ok=True)
    else:
        plot_comparison(comparison, keys, root / "comparison.png")
    records = {p.name: _record(root / p.name) for p in points}
    ok = sum(1 for r in records.values() if r and r["status"] == "ok")
    failed = sum(1 for r in records.values() if r and r["status"] == "failed")
    facts = {"notebook": registry.NOTEBOOKS[key], "profile": profile,
             "grid": ", ".join(f"{k} = {' | '.join(map(str, v))}" for k, v in grid.items()) or "(none)",
             "training seeds": ", ".join(dict.fromkeys(as_text(p.values["seeds"]) for p in points))
             if "seeds" in points[0].values else "as in the profile",
             "points": f"{len(points)}: {ok} ok, {failed} failed, {len(points) - ok - failed} not run",
             "code fingerprint": code_fingerprint(),
             "tables built": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    executed = {p.name: registry.NOTEBOOKS[key] for p in points if records[p.name]}
    write_page(root, key, profile, comparison, table, facts, executed)
    return table, comparison


def sweep(key: str, grid: dict[str, list], profile: str = "demo", seeds: int | None = None,
          jobs: int | None = None, timeout: int | None = None, out_root: Path | None = None,
          scheduler: str | None = None) -> pd.DataFrame:
    """Run the points not done yet (on a local cluster of ``jobs`` workers, or on ``scheduler``); return
    one row per (point, run) and write sweep.csv, comparison.csv, comparison.png and sweep.html."""
    if jobs is not None and jobs < 1:
        raise ParameterError(f"--jobs {jobs}: give a number of worker processes >= 1")
    points, source = plan(key, grid, profile, seeds)
    root = Path(out_root) if out_root else reports_dir(profile) / "sweeps" / key
    fingerprint = code_fingerprint()
    todo = []
    for p in points:
        record = _record(root / p.name)
        if not (record and record["status"] == "ok" and (root / p.name / "metrics.json").is_file() and
                record["key"] == point_key(key, p.params, source, fingerprint)):
            todo.append(p)
    print(f"sweep {key} ({profile}): {len(points)} point(s), {len(points) - len(todo)} already done, "
          f"{len(todo)} to run -> {root}", flush=True)
    if todo and scheduler and jobs:
        print(f"  --jobs {jobs} is ignored: the cluster at {scheduler} has its own workers", flush=True)
    if todo:
        want_gpu = any(p.gpu for p in todo)
        gpus = local_gpus() if want_gpu and not scheduler else []
        with client_for(scheduler, jobs, gpus, want_gpu) as client:
            try:
                run_points(client, todo, root, key, source, timeout, want_gpu and bool(scheduler or gpus))
            finally:  # on Ctrl-C too: the tables show what finished
                table, comparison = write_tables(root, key, profile, points, grid)
    else:
        table, comparison = write_tables(root, key, profile, points, grid)
    if not comparison.empty:
        print(comparison.to_string(index=False), flush=True)
    print(f"tables: {root / 'sweep.csv'}, {root / 'comparison.csv'}; page: {root / 'sweep.html'}", flush=True)
    return table
