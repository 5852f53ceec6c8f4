"""``python -m labkit sweep``: run a notebook over a grid of parameters (and seeds) with papermill,
each point in its own folder, then collect every run's metrics into one CSV, a comparison table
(mean and spread over seeds) and a plot."""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from labkit.params import ParameterError
from labkit.paths import atomic_write_text, reports_dir
from labkit import notebooks as registry


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


def grid_points(grid: dict[str, list], seeds: int) -> list[dict]:
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    if seeds > 1:
        points = [{**p, "seed": s} for p in points for s in range(seeds)]
    return points


def _gpus() -> list[str]:
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _run_point(i: int, key: str, params: dict, out_dir: Path, jobs: int, timeout: int | None) -> str | None:
    """One papermill process. With several jobs, each gets a fair share of CPU threads and, where there
    are several GPUs, its own."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)
    params_file = out_dir / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, LABKIT_PLAIN_PROGRESS="1")
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        gpus = _gpus()
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    name = registry.NOTEBOOKS[key]
    cmd = [sys.executable, "-m", "papermill", str(registry.notebooks_dir() / name), str(out_dir / name),
           "-f", str(params_file), "--cwd", str(registry.notebooks_dir()), "-k", "python3", "--no-progress-bar"]
    if timeout:
        cmd += ["--execution-timeout", str(timeout)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in done.stderr.strip().splitlines() if l.strip()]
        return lines[-1] if lines else f"papermill exited with {done.returncode}"
    return None


def sweep(key: str, grid: dict[str, list], profile: str = "demo", seeds: int = 1, jobs: int = 1,
          timeout: int | None = None, out_root: Path | None = None) -> pd.DataFrame:
    """Run the grid; return one row per (point, run) and write sweep.csv, comparison.csv, comparison.png."""
    if key not in registry.available():
        raise ParameterError(f"notebook {key!r} is not allowed; allowed: {', '.join(registry.available())}")
    if not grid:
        raise ParameterError("a sweep needs at least one -p NAME VALUE [VALUE ...]")
    base = registry.load_params(profile, key)
    points = grid_points(grid, seeds)
    root = Path(out_root) if out_root else reports_dir(profile) / "sweeps" / key
    jobs_list = []
    for p in points:
        out_dir = root / point_name(p)
        params = {**base, **p, "profile": profile, "output_dir": str(out_dir.resolve())}
        # every point is checked before any runs
        registry.check_names(registry.notebooks_dir() / registry.NOTEBOOKS[key], params)
        jobs_list.append((p, out_dir, params))
    print(f"sweep {key}: {len(points)} point(s), {jobs} at a time -> {root}", flush=True)

    def run(item):
        i, (p, out_dir, params) = item
        error = _run_point(i, key, params, out_dir, jobs, timeout)
        print(f"  {point_name(p)}: {'FAILED: ' + error if error else 'ok'}", flush=True)
        return p, out_dir, error

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        finished = list(pool.map(run, enumerate(jobs_list)))
    rows = []
    for p, out_dir, error in finished:
        metrics = out_dir / "metrics.json"
        if error or not metrics.exists():
            rows.append({**p, "run": None, "accuracy": None, "status": "failed", "error": error})
            continue
        for name, run_metrics in json.loads(metrics.read_text())["runs"].items():
            rows.append({**p, "run": name, **run_metrics})
    table = pd.DataFrame(rows)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.csv", table.to_csv(index=False))
    comparison = compare(table, [k for k in grid if k != "seed"])
    atomic_write_text(root / "comparison.csv", comparison.to_csv(index=False))
    if not comparison.empty:
        plot_comparison(comparison, [k for k in grid if k != "seed"], root / "comparison.png")
    return table


def compare(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of the accuracy over seeds, per grid point and run."""
    ok = table.dropna(subset=["run"])
    if ok.empty:
        return pd.DataFrame()
    as_text = ok.assign(**{k: ok[k].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
                           for k in keys})
    grouped = as_text.groupby(keys + ["run"], sort=False)["accuracy"]
    return grouped.agg(accuracy_mean="mean", accuracy_std="std", seeds="count").reset_index()


def plot_comparison(comparison: pd.DataFrame, keys: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x_key = keys[0]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for run, df in comparison.groupby("run", sort=False):
        labels = [str(v) for v in df[x_key]] if len(keys) == 1 else [
            ", ".join(f"{k}={r[k]}" for k in keys) for _, r in df.iterrows()]
        ax.errorbar(labels, df["accuracy_mean"], yerr=df["accuracy_std"].fillna(0), marker="o", capsize=3,
                    label=run)
    ax.set_xlabel(x_key if len(keys) == 1 else "grid point")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
