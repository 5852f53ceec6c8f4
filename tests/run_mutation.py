"""`make mutation`: mutmut on each module that computes or wires numbers, against that module's own fast tests.

    python tests/run_mutation.py [labkit/metrics.py labkit/runs.py ...] [--jobs 1] [--keep]

Each module gets a working folder of its own, ``.mutation/<module>/`` (git-ignored), holding links to the
checkout's ``labkit/``, ``tests/`` and ``notebooks/`` and a ``setup.cfg`` that tells mutmut to mutate that
module only and to run only its own test file(s) (``labkit/a/b.py`` -> ``tests/a/test_b.py``, plus
``MORE_TESTS``), without the tests marked slow, with ``-x -q -p no:randomly``; ``run.log`` there is mutmut's
output. mutmut copies the package to ``.mutation/<module>/mutants/`` and imports it from there, so the
checkout's files are never changed.

At the end it prints, per module, how many mutants were killed, survived, timed out, had no test, and how
many survivors tests/MUTATION.md judges equivalent (a mutant named there in backticks, with its reason), and
the kill rate over the non-equivalent ones (a timeout counts as killed: the tests noticed). It exits 1 when
a module is below ``--goal`` (85 %) or MUTATION.md names a mutant that no longer survives.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
NOTES = ROOT / "tests" / "MUTATION.md"
DEFAULT_MODULES = ("labkit/metrics.py", "labkit/runs.py", "labkit/results.py", "labkit/training/optim.py",
                   "labkit/training/losses.py", "labkit/training/checkpoints.py", "labkit/training/loop.py",
                   "labkit/training/convs.py",
                   "labkit/questions/experiments.py", "labkit/questions/claims.py",
                   "labkit/questions/q1_transfer.py", "labkit/questions/q2_losses.py",
                   "labkit/questions/q3_optimizers.py", "labkit/report/index.py")
# Where a module's wiring is tested in more files than its own: checkpoints are resumed through fit (the loop's
# tests), each question's settings are proven in its wiring tests. Tests marked slow (a demo-size network, a
# whole notebook: minutes per mutant) are left out of every selection; `make test` runs them.
MORE_TESTS = {
    "labkit/training/checkpoints.py": ["tests/training/test_loop.py"],
    "labkit/questions/q1_transfer.py": ["tests/questions/test_wiring_q1.py"],
    "labkit/questions/q2_losses.py": ["tests/questions/test_wiring_q2.py"],
    "labkit/questions/q3_optimizers.py": ["tests/questions/test_wiring_q3.py"],
}
LINKED = ("labkit", "tests", "notebooks")
# torch is not fork-safe: a mutmut worker forked from the process that ran the tests with a pool of threads
# may hang (a timeout that says nothing about the mutant). With one thread (which also caps labkit's fair share
# of threads, and keeps a mutation run on one core) there is no pool to hang in, and forking stays fast
# (mutmut's "forkserver" avoids the hang too, at 2-15x the time).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tests_for(module: str) -> list[str]:
    """``labkit/training/optim.py`` -> ``tests/training/test_optim.py`` (and ``MORE_TESTS``): a module's fast
    tests."""
    path = Path(module)
    test = Path("tests", *path.parts[1:-1], f"test_{path.stem}.py")
    if not (ROOT / test).is_file():
        sys.exit(f"{module}: no test file {test} (a module is mutated against its own test file)")
    return [test.as_posix(), *MORE_TESTS.get(module, [])]


def prepare(module: str, keep: bool) -> Path:
    work = WORK / module.removesuffix(".py").replace("/", ".")
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = work / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = labkit\n"
        f"only_mutate = {module}\n"
        "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in tests_for(module)) +
        "    -m\n    not slow\n" +
        "also_copy = notebooks\n"
        "process_isolation = fork\n")
    return work


def mutmut(work: Path, *args: str) -> str:
    """Runs ``mutmut ARGS`` in ``work``; its output goes to ``work/mutmut.log`` as it comes (progress)."""
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe) if exe.exists() else "mutmut", *args]
    log = work / "mutmut.log"
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **ONE_THREAD, "PYTHONDONTWRITEBYTECODE": "1"}).returncode
    out = log.read_text()
    if code != 0:
        sys.exit(f"mutmut {' '.join(args)} failed in {work} (exit {code}):\n{out[-4000:]}")
    return out


def equivalents() -> dict[str, str]:
    """``{mutant name: why}`` from tests/MUTATION.md: lines naming a mutant in backticks."""
    found = {}
    if NOTES.is_file():
        for line in NOTES.read_text().splitlines():
            for name in re.findall(r"`([^`\s]+__mutmut_\d+)`", line):
                found[name] = line
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES))
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (mutmut's --max-children)")
    ap.add_argument("--keep", action="store_true", help="keep the previous results: test only new mutants")
    ap.add_argument("--goal", type=float, default=85.0, help="the least kill rate %% over non-equivalent mutants")
    args = ap.parse_args(argv)
    judged = equivalents()
    rows, failed, stale = [], False, []
    for module in args.modules:
        start = time.monotonic()
        work = prepare(module, args.keep)
        print(f"== {module} against {' '.join(tests_for(module))}", flush=True)
        mutmut(work, "run", "--max-children", str(args.jobs))
        (work / "mutmut.log").rename(work / "run.log")
        statuses = dict(re.findall(r"^\s+(\S+): (.+)$", mutmut(work, "results", "--all", "true"), re.M))
        counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "other": 0}
        for name, status in sorted(statuses.items()):
            if name in judged:
                if status == "survived" or status == "no tests":
                    counts["equivalent"] += 1
                else:
                    stale.append(f"{name}: {status}, yet MUTATION.md calls it equivalent")
                    counts["killed" if status == "killed" else "other"] += 1
                continue
            if status == "caught by type check":
                status = "killed"
            key = status if status in counts else "other"
            counts[key] += 1
            if key in ("survived", "other"):
                print(f"   {status}: {name}   (mutmut show {name}, in {work.relative_to(ROOT)})")
        judged_here = counts["killed"] + counts["timeout"] + counts["survived"] + counts["other"]
        rate = 100.0 * (counts["killed"] + counts["timeout"]) / judged_here if judged_here else 100.0
        failed |= rate < args.goal
        rows.append((module, len(statuses), counts, rate, time.monotonic() - start))
    print(f"\n{'module':34} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv.':>6} {'timeout':>7} {'other':>5} "
          f"{'kill rate':>9} {'time':>6}")
    for module, total, c, rate, secs in rows:
        print(f"{module:34} {total:7} {c['killed']:6} {c['survived']:8} {c['equivalent']:6} {c['timeout']:7} "
              f"{c['other']:5} {rate:8.1f}% {secs:5.0f}s")
    print("kill rate = (killed + timed out) / (mutants - judged equivalent); 'other': no tests, suspicious, segfault")
    for line in stale:
        print("stale:", line)
    return 1 if failed or stale else 0


if __name__ == "__main__":
    sys.exit(main())
