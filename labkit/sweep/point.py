"""One sweep point, executed on a Dask worker: papermill runs the notebook into a temporary folder and
the point's files (executed notebook, metrics.json, figures, tables) come back to the client as bytes,
so workers need no filesystem shared with the client.

Kept light (papermill is imported inside) because every worker imports this module to unpickle the task.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

from labkit.report.execute import run_notebook
from labkit.paths import code_fingerprint, project_root


def _notebook_error(err: Exception) -> str | None:
    """One line for a failure of the notebook itself (a cell raised, timed out, or the kernel died);
    None for anything else, which is left to Dask to retry (a kernel that did not start, a full disk)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError
    if isinstance(err, PapermillExecutionError):
        return f"{err.ename}: {err.evalue}"
    if isinstance(err, CellTimeoutError):
        return f"CellTimeoutError: {str(err).strip().splitlines()[0]}"
    if isinstance(err, DeadKernelError):
        return "DeadKernelError: the notebook's kernel died (out of memory?)"
    return None


def run_point(notebook: str, source: bytes, params: dict, timeout: int | None = None) -> dict:
    """Execute ``source`` (the notebook's bytes, named ``notebook``) with ``params``; return
    ``{"error", "files": {relative path: bytes}, "seconds", "worker", "fingerprint"}``.

    The working directory is the worker's ``notebooks/`` (the project contract) when it has one.
    A failing notebook is a result (``error`` set, its executed copy kept), not an exception.
    """
    os.environ["LABKIT_PLAIN_PROGRESS"] = "1"  # inherited by the kernel: text progress, no widgets
    notebooks = project_root() / "notebooks"
    with tempfile.TemporaryDirectory(prefix="labkit-point-") as tmp:
        tmp = Path(tmp)
        (tmp / "source.ipynb").write_bytes(source)
        out = tmp / "out"
        out.mkdir()
        started, error = time.perf_counter(), None
        try:
            run_notebook(tmp / "source.ipynb", out / notebook, {**params, "output_dir": str(out)},
                         notebooks if notebooks.is_dir() else tmp, timeout)
        except Exception as err:  # noqa: BLE001 - sorted below: the notebook's own failure, or re-raised
            error = _notebook_error(err)
            if error is None:
                raise
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):  # called outside a worker (the benchmark's direct baseline)
        worker = socket.gethostname()
    return {"error": error, "files": files, "seconds": time.perf_counter() - started, "worker": worker,
            "fingerprint": code_fingerprint()}
