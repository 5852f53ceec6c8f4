"""Project paths, resolved from the project root, never from the caller's working directory.

Notebooks run with ``notebooks/`` as their working directory, tests from the
repository root, the report runner from anywhere: all of them must agree on
where ``data/`` and ``reports/`` are.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from labkit.errors import LabkitError


def project_root() -> Path:
    """The labkit checkout: ``$LABKIT_ROOT`` if set, else the folder holding this package."""
    if os.environ.get("LABKIT_ROOT"):
        return Path(os.environ["LABKIT_ROOT"]).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


# The code on the path from dataset files to predictions: loaders and generators, models, the stand-in, the
# training loop, losses, optimizers, and each question's data and training. Every cache and checkpoint key holds
# its fingerprint. Prose, findings, the original's numbers and claims, the forecast, the report, the CLI,
# templates and benchmarks are not on it: editing them retrains nothing.
FINGERPRINTED = ("data/core.py", "data/loaders.py", "data/batches.py", "data/synthetic.py", "device.py", "models.py",
                 "runs.py", "training/standin.py", "training/convs.py", "training/loop.py",
                 "training/checkpoints.py", "training/losses.py", "training/optim.py", "training/gradflow.py",
                 "training/sharing.py",
                 "questions/contract.py", "questions/imagenet.py", "questions/q1_transfer.py",
                 "questions/q2_losses.py", "questions/q3_optimizers.py")
# Top-level functions and names in those files that only report (sentences, titles, the forecast's passes, 2-D
# projections for plots): left out of the fingerprint like comments and docstrings.
REPORTING = {"TITLE", "architecture", "findings", "passes", "describe", "batch_size_verdict", "two_run_yardstick",
             "best_run", "project_2d", "embedding_view", "summary_view"}


def code_fingerprint() -> str:
    """A hash of the code on the path from files to predictions (:data:`FINGERPRINTED`), computed once per
    process. Every cache and checkpoint key holds it, so a changed loss, loop or loader never serves a result
    that older code produced, while the same code and parameters still hit the cache and resume."""
    return fingerprint_of(Path(__file__).resolve().parent)


@functools.cache
def fingerprint_of(package: Path) -> str:
    """:func:`code_fingerprint` of the labkit package in ``package``. Each file counts by its syntax tree without
    docstrings and :data:`REPORTING` definitions, so comments, docstrings and prose change nothing (a new Python
    version may print its trees differently: the caches are then rebuilt once)."""
    import ast
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        path = Path(package) / name
        if not path.is_file():
            digest.update(f"{name}: missing".encode())
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tree.body = [node for node in tree.body if _defines(node) not in REPORTING]
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()[:12]


def _defines(node) -> str | None:
    """The name a top-level statement defines (a function, a class, one assigned name), else None."""
    import ast
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
        else []
    return targets[0].id if len(targets) == 1 and isinstance(targets[0], ast.Name) else None


@functools.cache
def git_commit() -> str:
    """The short commit of labkit's checkout, with ``+dirty`` when tracked files differ from it, or "unknown"
    (an installed copy, no git). The code fingerprint says whether the code itself differs."""
    import subprocess
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = commit and git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit or "unknown"


def data_root() -> Path:
    return project_root() / "data"


def cache_dir(*parts: str) -> Path:
    """``data/cache/<parts>``, created on demand. Caches never go inside a dataset folder."""
    path = data_root().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def real_data_dir(dataset: str) -> Path:
    """Where ``make data`` puts a real dataset: ``data/<dataset>/``."""
    return data_root() / dataset


def synthetic_data_dir(dataset: str) -> Path:
    """Where the generators write a synthetic dataset: ``data/synthetic/<dataset>/``."""
    return data_root() / "synthetic" / dataset


def reports_dir(profile: str) -> Path:
    return project_root() / "reports" / profile


def default_output_dir(profile: str, notebook: str) -> Path:
    """``reports/<profile>/<nb>/``, the contract's default ``output_dir``."""
    return reports_dir(profile) / notebook


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt: the old file stays, and no half-written temporary
        tmp.unlink(missing_ok=True)
        raise


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory: the bytes to write atomically (and to size before writing)."""
    import io

    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(path: Path, obj) -> None:
    """``torch.save`` to ``path`` atomically: readers never see half a file."""
    atomic_write_bytes(path, torch_bytes(obj))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class DiskSpaceError(LabkitError, OSError):
    """A file about to be written does not fit on its disk; the message gives the space needed and free."""


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` when ``needed`` bytes do not fit under ``folder``: checked before
    writing, so a full disk gives one clear error instead of a half-written file."""
    folder = Path(folder).resolve()
    while not folder.exists():  # not created yet: its nearest existing parent is on the same disk
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskSpaceError(f"{what} needs {needed / 1e9:.2f} GB but {folder} has {free / 1e9:.2f} GB free. "
                             f"Free some space (or point LABKIT_ROOT at a larger disk) and run the command again.")


def touch(path: Path) -> None:
    """Mark a cache file as used now (its modification time): ``python -m labkit cache`` shows it as the last
    use, and ``--prune --older-than`` keeps what is in use. Never an error: a read-only cache still serves."""
    try:
        os.utime(path)
    except OSError:
        pass


@contextlib.contextmanager
def environ_kept(keys: set[str]) -> Iterator[None]:
    """Give these environment variables of this process their values back on exit."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
