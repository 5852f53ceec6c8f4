"""Runs that share a machine: a fair share of the CPU cores, and one training per run key.

Two trainings at once (two JupyterLab kernels, a report while a sweep runs) would each start as many
threads as there are cores; OpenMP's busy-waiting threads then make each several times slower than
running them one after the other. So every CPU training registers itself in ``data/cache/running/``
(``<pid>.json``; entries of processes that are gone are ignored and removed) and takes
``cores // running trainings`` threads (at least 1, at most what the process had) when it starts. The
count stays fixed for the run and is recorded with it: a thread count changes CPU results in the last
bits, so a resumed run goes on with the count it started with. CUDA runs leave the threads alone.

Two processes that start the same run (same checkpoint, so same key) must not train it twice: each run
holds an exclusive ``flock`` on ``<checkpoint>.lock`` while it trains; a second one waits, then finds the
first's final checkpoint and reuses it. The kernel releases the lock when its holder dies, so a killed
run never blocks the next one, which resumes from the killed run's last epoch.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from labkit.paths import atomic_write_text, cache_dir

# Set to 0 to keep the process's own thread count (a benchmark's baseline, or threads chosen by hand).
SHARE_ENV = "LABKIT_SHARE_CORES"
_registered = 0  # nested trainings in this process (one registry entry for all of them)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def running() -> list[dict]:
    """The labkit trainings running now on this machine's CPU (under this project root); stale entries of
    processes that are gone are removed."""
    out = []
    for entry in sorted(cache_dir("running").glob("*.json")):
        try:
            info = json.loads(entry.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written by another process, or not ours
        if _alive(pid):
            out.append(info)
        else:
            entry.unlink(missing_ok=True)
    return out


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fair_share(n_running: int, available: int, own: int) -> int:
    """Threads for one of ``n_running`` trainings on ``available`` cores, never more than ``own`` (the
    process's own count, which a sweep worker's OMP_NUM_THREADS or the user may have lowered)."""
    return max(1, min(own, available // max(1, n_running)))


@contextlib.contextmanager
def cpu_threads(device, recorded: int | None = None):
    """Register this training and set torch's thread count to its fair share (or to ``recorded``, the count a
    resumed run started with) for the duration; yields the count (None on CUDA and MPS: left alone)."""
    import torch  # here, not at the top: `python -m labkit cache` reads the locks without loading torch
    global _registered
    if device.type != "cpu":
        yield None
        return
    previous = torch.get_num_threads()
    share = os.environ.get(SHARE_ENV, "1") != "0"
    if share:
        try:
            entry = cache_dir("running") / f"{os.getpid()}.json"
            atomic_write_text(entry, json.dumps({"pid": os.getpid(), "started": time.time()}))
            _registered += 1
        except OSError:  # a read-only project: train with the process's own count rather than not at all
            share = False
    try:
        threads = recorded or (fair_share(len(running()), cores(), previous) if share else previous)
        torch.set_num_threads(threads)
        yield threads
    finally:
        torch.set_num_threads(previous)
        if share:
            _registered -= 1
            if not _registered:
                entry.unlink(missing_ok=True)


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


@contextlib.contextmanager
def run_lock(checkpoint: Path, say=lambda line: print(line, flush=True),
             doing: str = "training the same run"):
    """Hold the run's lock (``<checkpoint>.lock``) for the duration; wait, saying so once (what the holder is
    ``doing``), while another process holds it. The holder removes the file when it is done; a process that got
    the lock on a file removed meanwhile tries again on the new one, so two processes never both hold "the" lock."""
    lock = lock_path(Path(checkpoint))
    lock.parent.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                say(f"waiting for process {holder}, which is {doing} ({Path(checkpoint).name}); "
                    f"its result is reused when it finishes")
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: see the loop above
        os.close(fd)


def is_locked(checkpoint: Path) -> bool:
    """True while a process trains this run (its lock is held); for ``cache --prune``, which leaves it alone."""
    lock = lock_path(Path(checkpoint))
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
