"""Kernels over Unix sockets: a real notebook run through papermill with them, and the warning gone."""
import json
import os

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labkit.report.execute import private_kernels

pytestmark = pytest.mark.skipif(os.name == "nt", reason="Unix sockets only")


def test_a_notebook_runs_over_unix_sockets_without_the_tcp_warning(tmp_path, capfd):
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(
        "import json, ipykernel.connect\n"
        "info = ipykernel.connect.get_connection_info(unpack=True)\n"
        "print(json.dumps({'transport': info['transport'], 'ip': info['ip']}))")]), source)
    with private_kernels() as manager:
        papermill.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False,
                                   kernel_manager_class=manager)
        sockets = manager().ip.rsplit("/", 1)[0]
    info = json.loads(nbformat.read(executed, as_version=4).cells[0].outputs[0]["text"])
    assert info["transport"] == "ipc" and info["ip"].startswith(sockets)
    assert not os.path.exists(sockets)  # the private socket folder is gone with the context
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err


def test_a_clean_run_shuts_its_kernel_down_without_an_error_line(tmp_path, capfd):
    """The smallest case of `make bench`'s "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.":
    papermill's last request (kernel_info) is answered, then the kernel is shut down; a SIGINT sent
    before the kernel has left that request's handler is logged as an error. The notebook holds every
    handler open for a second after its reply, so without the fix the signal lands there on any machine."""
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(
        "import time\n"
        "kernel = get_ipython().kernel\n"
        "leave = kernel.post_handler_hook\n"
        "kernel.post_handler_hook = lambda: (time.sleep(1), leave())")]), source)
    with private_kernels() as manager:
        papermill.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False,
                                   kernel_manager_class=manager, execution_timeout=60)
    out, err = capfd.readouterr()
    assert "ERROR" not in out + err and "KeyboardInterrupt" not in out + err, out + err


def test_a_kernel_busy_at_shutdown_is_still_ended(tmp_path):
    """Without the SIGINT at shutdown, a kernel stuck in a cell (here: past its timeout) is terminated."""
    from nbclient.exceptions import CellTimeoutError
    source, pid_file = tmp_path / "in.ipynb", tmp_path / "kernel.pid"
    nbformat.write(new_notebook(cells=[
        new_code_cell(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))"),
        new_code_cell("time.sleep(600)")]), source)
    with private_kernels() as manager, pytest.raises(CellTimeoutError):
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   progress_bar=False, kernel_manager_class=manager, execution_timeout=2)
    with pytest.raises(ProcessLookupError):  # gone and reaped when papermill returns
        os.kill(int(pid_file.read_text()), 0)
