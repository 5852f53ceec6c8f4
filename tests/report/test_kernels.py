"""Kernels over Unix sockets: a real notebook run through papermill with them, and the warning gone."""
import json
import os

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from labkit.report.kernels import private_kernels

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
