"""Injects, one at a time, the realistic wiring bugs that once survived the suite, and checks each is caught.

    python tests/run_example_bugs.py [--only holm] [--limit 60]

Each bug is a small edit of one module of a throwaway copy of the checkout (``labkit/``, ``tests/``,
``notebooks/``, ``pyproject.toml``); the test file(s) that mirror the changed code then run against that copy
(``-x -p no:randomly -m "not slow"``, a timeout per child). A bug is caught when those tests fail within
``--limit`` seconds (60: "caught in under a minute of that test file's run"). The checkout is never changed.
Exits 1 when a bug is not caught, is caught too slowly, or its edit no longer applies (the code moved on: update
the edit, so the bug keeps being injected where it would really happen).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    what: str
    module: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug("adam_lr", "Adam silently ignores the requested learning rate and trains at torch's default 1e-3",
        "labkit/training/optim.py",
        "    cls = getattr(torch.optim, CLASSES[name])\n",
        "    cls = getattr(torch.optim, CLASSES[name])\n    lr = 1e-3 if name == 'adam' else lr\n",
        ("tests/training/test_optim.py",)),
    Bug("shared_checkpoint", "two training seeds share one checkpoint path (seed 1 loads seed 0's final state)",
        "labkit/runs.py",
        "run_key(question, run.settings, run.seed, data)}.pt",
        "run_key(question, run.settings, 0, data)}.pt",
        ("tests/test_runs.py",)),
    Bug("holm_running_max", "Holm's correction without its running maximum",
        "labkit/questions/experiments.py",
        "running = max(running, min(1.0, (m - rank) * p_values[i]))",
        "running = min(1.0, (m - rank) * p_values[i])",
        ("tests/questions/test_experiments.py",)),
    Bug("retrieval_self", "retrieval lets each query retrieve itself",
        "labkit/questions/q2_losses.py",
        "ref_includes_query=True)",
        "ref_includes_query=False)",
        ("tests/questions/test_q2_losses.py",)),
    Bug("q3_class_sorted", "Q3's class-sorted order does not reach training",
        "labkit/questions/q3_optimizers.py",
        'order = "class_sorted" if run["order"] == "class_sorted" else "shuffle"',
        'order = "shuffle"',
        ("tests/questions/test_wiring_q3.py",)),
    Bug("q3_full_batch", "Q3's full-batch order does not reach training (one update per batch, not per epoch)",
        "labkit/questions/q3_optimizers.py",
        'accumulate="epoch" if run["order"] == "full_batch" else 1',
        "accumulate=1",
        ("tests/questions/test_wiring_q3.py",)),
    Bug("val_on_train", "the validation curve is computed on the training batches",
        "labkit/training/loop.py",
        "v = evaluate(model, val, device, precision)",
        "v = evaluate(model, train, device, precision)",
        ("tests/training/test_loop.py",)),
    Bug("flow_from_weights", "gradient-flow numbers taken from the weights instead of their gradients",
        "labkit/training/gradflow.py",
        "grads = [m.weight.grad for _, m in self.layers]",
        "grads = [m.weight.detach() for _, m in self.layers]",
        ("tests/training/test_gradflow.py",)),
    Bug("index_flags_swapped", "the index shows FAILED on a diverged row and DIVERGED on a failed one",
        "labkit/report/index.py",
        '"flag": FLAGS.get(row["status"], "")}',
        '"flag": FLAGS.get({"failed": "diverged", "diverged": "failed"}.get(row["status"], row["status"]), "")}',
        ("tests/report/test_index.py",)),
)


def copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("labkit", "tests", "notebooks"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, symlinks=True)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def inject(copy: Path, bug: Bug) -> None:
    path = copy / bug.module
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise LookupError(f"{bug.name}: the edit's original text is found {text.count(bug.old)} times in "
                          f"{bug.module} (expected once): update BUGS in {Path(__file__).name}")
    path.write_text(text.replace(bug.old, bug.new))


def run_tests(copy: Path, tests: tuple[str, ...], limit: float) -> tuple[int, float, str]:
    """pytest on ``tests`` in ``copy``, importing ``copy``'s labkit; (exit code, seconds, output's tail)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
           "-m", "not slow", "--no-header", "-o", "addopts="]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=max(limit * 3, 180))
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, out = -1, f"timed out after {err.timeout:.0f} s"
    return code, time.monotonic() - start, out[-3000:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="bug names (default: all)")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds within which the tests must fail")
    args = ap.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or b.name in args.only]
    unknown = set(args.only or ()) - {b.name for b in BUGS}
    if unknown:
        sys.exit(f"unknown bug name(s) {', '.join(sorted(unknown))}; known: {', '.join(b.name for b in BUGS)}")
    problems = []
    with tempfile.TemporaryDirectory(prefix="labkit-bugs-") as tmp:
        clean = Path(tmp) / "clean"
        copy_checkout(clean)
        for bug in bugs:
            # Each bug on a fresh copy of the clean tree: bugs never add up.
            copy = Path(tmp) / bug.name
            shutil.copytree(clean, copy, symlinks=True)
            try:
                inject(copy, bug)
            except LookupError as err:
                problems.append(str(err))
                print(f"STALE   {bug.name}: {err}", flush=True)
                continue
            code, seconds, out = run_tests(copy, bug.tests, args.limit)
            caught = code not in (0, 5, -1)  # 5: no tests collected
            verdict = "caught" if caught and seconds <= args.limit else "SLOW" if caught else "MISSED"
            print(f"{verdict:7} {bug.name:20} {seconds:5.1f} s  {' '.join(bug.tests)}  ({bug.what})", flush=True)
            if verdict != "caught":
                problems.append(f"{bug.name}: {verdict.lower()} ({seconds:.0f} s)\n{out}")
            shutil.rmtree(copy, ignore_errors=True)
    for p in problems:
        print("\n" + p)
    print(f"\n{len(bugs) - len(problems)} of {len(bugs)} injected bugs caught within {args.limit:.0f} s each")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
