"""``make bench``'s shared-machine comparison: two Q3 trainings at once, each in its own process (two
JupyterLab kernels, or a report while a sweep runs), against the same two one after the other; together
with labkit's fair thread shares (:mod:`labkit.training.sharing`) and together without them (each process taking
every core, as before).

Each process loads the (cached) data first and waits at a barrier, so only ``train_and_test`` is timed:
one after the other is the sum of the two runs' times, together is from the barrier to the later run's
end. Both are registered as running trainings before the barrier, so each sees the other when it starts.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from labkit.questions import q3_optimizers as q3
from labkit.questions.registry import resolved_parameters
from labkit.runs import Run
from labkit.training.sharing import cpu_threads

seed, epochs, per_class, image_size, barrier = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), Path(sys.argv[5])
data = q3.load_data(resolved_parameters("q3", synthetic_per_class=per_class, image_size=image_size,
                                        test_fraction=0.3, val_fraction=0.15, seed=0))
run = Run("bench_share", {**q3.RUN_DEFAULTS, "batch_size": 64, "lr": 1e-3, "epochs": epochs,
                          "gradient_flow_every": 5}, seed)
with cpu_threads(torch.device("cpu")):  # counted as running from here: the other process sees it at its start
    (barrier.parent / f"ready-{seed}").touch()
    while not barrier.exists():
        time.sleep(0.005)
    start = time.time()
    out = q3.train_and_test(run, data, torch.device("cpu"), keep_checkpoints="none")
    end = time.time()
    # stay registered until the other run has finished too: a run that ends first must not leave the other
    # to start alone and take every core
    (barrier.parent / f"done-{seed}").touch()
    while len(list(barrier.parent.glob("done-*"))) < len(list(barrier.parent.glob("ready-*"))):
        time.sleep(0.005)
print(json.dumps({"start": start, "end": end, "threads": out.history.threads, "accuracy": out.accuracy}))
"""


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python process that imports labkit from this checkout (the
    checkout first on PYTHONPATH), with ``extra`` on top."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, "PYTHONPATH": path, **extra}


def _pair(root: Path, seeds: tuple[int, int], together: bool, share: bool, epochs: int, per_class: int,
          image_size: int) -> dict:
    """Two Q3 runs in two processes; returns the seconds they took (sum, or span when together) and their
    thread counts."""
    env = child_env(LABKIT_PLAIN_PROGRESS="1", LABKIT_SHARE_CORES="1" if share else "0")
    results = []
    groups = [seeds] if together else [(s,) for s in seeds]
    for group in groups:
        folder = root / f"barrier-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        barrier = folder / "go"
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(s), str(epochs), str(per_class),
                                   str(image_size), str(barrier)], env=env, stdout=subprocess.PIPE, text=True)
                 for s in group]
        while len(list(folder.glob("ready-*"))) < len(group):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.01)
        go = time.time()
        barrier.touch()
        for p in procs:
            out, _ = p.communicate(timeout=1800)
            if p.returncode:
                raise RuntimeError(f"a benchmark training process failed (exit {p.returncode})")
            results.append({**json.loads(out.strip().splitlines()[-1]), "go": go})
    if together:
        seconds = max(r["end"] for r in results) - results[0]["go"]
    else:
        seconds = sum(r["end"] - r["start"] for r in results)
    return {"seconds": seconds, "threads": [r["threads"] for r in results]}


def bench_shared_cores(root: Path, repeats: int = 3, epochs: int = 5, per_class: int = 400,
                       image_size: int = 32) -> dict:
    """Two Q3 Adam runs (the demo's data and size): one after the other, together with fair thread shares,
    together without; interleaved repeats, medians. Ratios above 1 mean the pair finished sooner than one after
    the other."""
    from labkit.questions import q3_optimizers as q3
    from labkit.questions.registry import resolved_parameters
    from labkit.training.sharing import cores

    # generated and decoded once, untimed
    q3.load_data(resolved_parameters("q3", synthetic_per_class=per_class, image_size=image_size, test_fraction=0.3,
                                     val_fraction=0.15, seed=0))
    modes = {"sequential": (False, True), "shared": (True, True), "unshared": (True, False)}
    times, threads = {m: [] for m in modes}, {}
    for _ in range(repeats):
        for mode, (together, share) in modes.items():
            r = _pair(root, (0, 1), together, share, epochs, per_class, image_size)
            times[mode].append(r["seconds"])
            threads[mode] = r["threads"]
    t = {m: statistics.median(v) for m, v in times.items()}
    return {"cores": cores(), "epochs": epochs, "sequential_s": t["sequential"], "shared_s": t["shared"],
            "unshared_s": t["unshared"], "shared_threads": threads["shared"],
            "unshared_threads": threads["unshared"], "shared_ratio": t["sequential"] / t["shared"],
            "unshared_ratio": t["sequential"] / t["unshared"]}


def describe(r: dict) -> str:
    """The printed line."""
    return (f"two Q3 Adam trainings at once on {r['cores']} cores (two processes, {r['epochs']} epochs each): one "
            f"after the other {r['sequential_s']:.1f} s; together with fair thread shares "
            f"({'+'.join(map(str, r['shared_threads']))} threads) {r['shared_s']:.1f} s -> "
            f"{r['shared_ratio']:.2f}x; together without sharing ({'+'.join(map(str, r['unshared_threads']))} "
            f"threads) {r['unshared_s']:.1f} s -> {r['unshared_ratio']:.2f}x (goal: together no slower than one "
            f"after the other, >= 1.0x)")
