"""Notebook kernels that papermill starts over Unix sockets instead of TCP on localhost.

Over TCP, ipykernel warns on the terminal, in every notebook run, that its traffic is not encrypted; Unix
sockets in a private temporary folder are reachable by this user only, so the warning has no cause (the
kernel's other messages still reach the terminal). Used by the report, by every sweep point on its worker
and by the sweep benchmark's papermill baseline. Kept light: jupyter_client is imported inside.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def kernel_manager_class(sockets: Path):
    """A kernel manager whose kernels talk over Unix sockets in ``sockets``. On Windows, which has no Unix
    sockets for ZeroMQ, nbclient's default (TCP)."""
    from jupyter_client.manager import AsyncKernelManager  # what nbclient uses by default
    from traitlets import default
    if os.name == "nt":
        return AsyncKernelManager

    class UnixSocketKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):  # absolute: the default is relative to the cwd, i.e. inside notebooks/
            return str(sockets / "kernel")

    return UnixSocketKernelManager


@contextlib.contextmanager
def private_kernels() -> Iterator[type]:
    """The kernel manager class to pass to ``papermill.execute_notebook(kernel_manager_class=...)``, its
    sockets in a temporary folder removed on exit."""
    with tempfile.TemporaryDirectory(prefix="labkit-kernel-") as sockets:  # short: a socket path has ~100 chars
        yield kernel_manager_class(Path(sockets))
