"""Executing a notebook: papermill on a kernel that talks over Unix sockets instead of TCP on localhost.

Over TCP, ipykernel warns on the terminal, in every notebook run, that its traffic is not encrypted; Unix
sockets in a private temporary folder are reachable by this user only, so the warning has no cause (the
kernel's other messages still reach the terminal). At shutdown they are not sent the SIGINT that
jupyter_client sends first, which printed a false "ERROR | KeyboardInterrupt caught in kernel." (see below).
Used by the report, by every sweep point on its worker and by the sweep benchmark's papermill baseline.
Kept light: jupyter_client is imported inside.
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

        async def _async_interrupt_kernel(self):
            # jupyter_client sends SIGINT before every shutdown_request. Papermill's last message before
            # the shutdown is a kernel_info_request; when the signal lands after its reply but before the
            # kernel has left that request's handler (a busy machine), ipykernel logs "ERROR |
            # KeyboardInterrupt caught in kernel." for a notebook that ran fine. At shutdown the kernel is
            # asked to stop without it; a kernel still busy (a timed-out cell) gets SIGTERM, then SIGKILL,
            # within shutdown_wait_time. Interrupts asked for by name (interrupt_kernel) are unchanged.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return UnixSocketKernelManager


@contextlib.contextmanager
def private_kernels() -> Iterator[type]:
    """The kernel manager class to pass to ``papermill.execute_notebook(kernel_manager_class=...)``, its
    sockets in a temporary folder removed on exit."""
    with tempfile.TemporaryDirectory(prefix="labkit-kernel-") as sockets:  # short: a socket path has ~100 chars
        yield kernel_manager_class(Path(sockets))


def run_notebook(source: Path, executed: Path, params: dict, cwd: Path, timeout: int | None = None,
                 log_output: bool = False) -> None:
    """The one place labkit calls papermill: execute ``source`` into ``executed`` with ``params`` (injected
    after the parameters cell), working directory ``cwd``, on a private kernel over Unix sockets. A cell that
    raises raises here (papermill's ``PapermillExecutionError``); the executed copy keeps the error."""
    import papermill
    with private_kernels() as manager:
        papermill.execute_notebook(str(source), str(executed), parameters=params, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=False, log_output=log_output,
                                   execution_timeout=timeout, kernel_manager_class=manager)
