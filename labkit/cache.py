"""``python -m labkit cache``: what ``data/cache/`` holds, by kind, with sizes and last use; ``--prune`` removes
the checkpoints of runs not used for a while, or all of one notebook's.

Last use is a file's modification time: labkit touches a dataset cache, a feature file or a checkpoint
each time it loads one (``labkit.paths.touch``), so a run that is still re-rendered is never "old".
Pruning only ever removes checkpoints (a run whose checkpoint is gone is trained again when next needed);
decoded datasets, features and stand-in weights are rebuilt on demand and left to ``make clean``, and the
downloaded datasets in ``data/<dataset>/`` are never touched.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from labkit.questions import registry
from labkit.params import ParameterError
from labkit.paths import data_root
from labkit.training.sharing import is_locked

# Folders of data/cache/ and what they hold; anything else is listed as "other".
KINDS = {"datasets": "decoded datasets", "features": "features (Q1)", "standin": "stand-in weights",
         "checkpoints": "checkpoints", "running": "running trainings"}
# <question>-<run name>-<run key>.pt, with its per-epoch copies (keep_checkpoints="all") and its lock file
CHECKPOINT = re.compile(r"^(?P<question>[^-]+)-(?P<run>.+)-(?P<key>[0-9a-f]{16})(?:\.epoch\d+)?\.pt(?:\.lock)?$")
AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Item:
    """One file under data/cache/."""

    path: Path
    kind: str  # a key of KINDS, or "other"
    size: int
    used: float  # last use: modification time, seconds since the epoch


def cache_root() -> Path:
    return data_root() / "cache"


def inventory() -> list[Item]:
    """Every file under data/cache/ (following the folder links a test root or a user may have made)."""
    root = cache_root()
    items = []
    for folder, _, files in os.walk(root, followlinks=True):
        top = Path(folder).relative_to(root).parts
        kind = top[0] if top and top[0] in KINDS else "other"
        for name in files:
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:  # removed meanwhile (an atomic replace, a finished run's lock)
                continue
            items.append(Item(path, kind, st.st_size, st.st_mtime))
    return items


def human_size(n: float) -> str:
    """Bytes in decimal units, as disks are sold and as ``df -H`` prints them (tqdm's ``format_sizeof``): 0.00B,
    512B, 1.23kB, 45.0MB, 2.00GB."""
    from tqdm import tqdm
    return tqdm.format_sizeof(n, "B")


def ago(seconds: float) -> str:
    """How long ago, for people: "just now", "5 min ago", "3 h ago", "9 days ago"."""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} days ago"


def parse_age(text: str) -> float:
    """"7d", "12h", "30m", "2w" (or a bare number of days) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw]?)\s*", str(text))
    if not match:
        raise ParameterError(f"--older-than={text!r} is not allowed; allowed: a number and a unit, m (minutes), "
                             f"h (hours), d (days) or w (weeks), e.g. 7d or 12h")
    return float(match[1]) * AGE_UNITS[match[2] or "d"]


def _row(label: str, items: list[Item], now: float, indent: int = 2) -> str:
    size = sum(i.size for i in items)
    used = max((i.used for i in items), default=None)
    when = f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(used))} ({ago(now - used)})" if used else ""
    return f"{' ' * indent}{label:<{24 - indent}} {len(items):>6} {human_size(size):>9}   {when}"


def listing(items: list[Item] | None = None, now: float | None = None) -> str:
    """The cache by kind (checkpoints also by notebook): files, size, last use; then what lies outside it."""
    items = inventory() if items is None else items
    now = time.time() if now is None else now
    lines = [f"{cache_root()}: {human_size(sum(i.size for i in items))} in {len(items)} files",
             f"  {'kind':<22} {'files':>6} {'size':>9}   last used"]
    for kind in [*KINDS, "other"]:
        these = [i for i in items if i.kind == kind]
        if not these:
            continue
        lines.append(_row(KINDS.get(kind, "other"), these, now))
        if kind == "checkpoints":
            by_question: dict[str, list[Item]] = {}
            for i in these:
                match = CHECKPOINT.match(i.path.name)
                by_question.setdefault(match["question"] if match else "?", []).append(i)
            lines += [_row(q, by_question[q], now, indent=4) for q in sorted(by_question)]
    lines += _outside_the_cache()
    lines.append("Remove old checkpoints with `python -m labkit cache --prune` (runs not used for 7 days; "
                 "--older-than 12h, --notebook q2); `make clean` removes the whole cache.")
    return "\n".join(lines)


def _size(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(parent) / name).stat().st_size
            except OSError:
                pass
    return total


def _outside_the_cache() -> list[str]:
    """The generated datasets and the downloaded ones: not the cache's, named so nobody looks for them there."""
    root, lines = data_root(), []
    if (root / "synthetic").is_dir():
        lines.append(f"not in the cache: data/synthetic/ {human_size(_size(root / 'synthetic'))} (generated "
                     f"datasets, made again on demand; `make clean` removes them)")
    downloaded = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("cache", "synthetic")) \
        if root.is_dir() else []
    if downloaded:
        lines.append("downloaded datasets (never pruned, kept by `make clean`): " +
                     ", ".join(f"data/{p.name}/ {human_size(_size(p))}" for p in downloaded))
    return lines


@dataclass
class RunFiles:
    """A run's checkpoint files: the checkpoint, its per-epoch copies and its lock file."""

    question: str
    name: str  # <question>-<run name>-<key>
    files: list[Item]

    @property
    def size(self) -> int:
        return sum(i.size for i in self.files)

    @property
    def used(self) -> float:
        return max(i.used for i in self.files)


def checkpoint_runs(items: list[Item] | None = None) -> list[RunFiles]:
    items = inventory() if items is None else items
    runs: dict[str, RunFiles] = {}
    for i in items:
        match = CHECKPOINT.match(i.path.name) if i.kind == "checkpoints" else None
        if match:
            name = f"{match['question']}-{match['run']}-{match['key']}"
            runs.setdefault(name, RunFiles(match["question"], name, [])).files.append(i)
    return sorted(runs.values(), key=lambda r: r.name)


def prune(older_than: float | None = None, notebook: str | None = None, dry_run: bool = False,
          now: float | None = None, say=print) -> int:
    """Remove the checkpoints of runs last used more than ``older_than`` seconds ago, of ``notebook`` ("q1",
    "q2", "q3") only when given (all of its runs when ``older_than`` is None). Runs being trained now (their
    lock held) are kept. Returns the bytes freed (that would be freed, with ``dry_run``)."""
    if notebook is not None and notebook not in registry.NOTEBOOKS:  # read at call time, as everywhere
        raise ParameterError(f"--notebook={notebook!r} is not allowed; allowed: {', '.join(registry.NOTEBOOKS)}")
    if notebook is None and older_than is None:
        raise ParameterError("say which checkpoints to prune: --older-than (e.g. 7d) and/or --notebook (q1, q2, q3)")
    now = time.time() if now is None else now
    freed = 0
    for run in checkpoint_runs():
        if notebook is not None and run.question != notebook:
            continue
        if older_than is not None and now - run.used <= older_than:
            continue
        if is_locked(run.files[0].path.with_name(f"{run.name}.pt")):
            say(f"kept {run.name}: a process is training it now")
            continue
        for i in run.files:
            if not dry_run:
                i.path.unlink(missing_ok=True)
        freed += run.size
        say(f"{'would remove' if dry_run else 'removed'} {run.name} ({len(run.files)} file(s), "
            f"{human_size(run.size)}, last used {ago(now - run.used)})")
    say(f"{'would free' if dry_run else 'freed'} {human_size(freed)}; data/cache/ "
        f"{'holds' if dry_run else 'now holds'} {human_size(sum(i.size for i in inventory()) - freed * dry_run)}")
    return freed
