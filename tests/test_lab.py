"""`make lab`: its command line as root and as another user, and a real JupyterLab started by the target."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None or os.name == "nt", reason="needs make and a POSIX shell")
STAMP = ".venv/.labkit-setup"  # -o: never run the setup step here (it would pip install into .venv)


def fake_id(tmp_path, uid: int) -> dict:
    """An environment whose `id -u` says ``uid``: the Makefile decides on --allow-root from it."""
    bin_dir = tmp_path / f"bin-{uid}"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "id").write_text(f'#!/bin/sh\n[ "$1" = -u ] && {{ echo {uid}; exit 0; }}\nexec /usr/bin/id "$@"\n')
    (bin_dir / "id").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def lab_line(env: dict, *make_args: str) -> str:
    # --no-print-directory: under `make test` this make is a sub-make, which would print "Entering directory"
    out = subprocess.run(["make", "--no-print-directory", "-n", "-o", STAMP, "lab", *make_args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return " ".join(out.split("\\\n"))  # the recipe's continued line as one


def test_allow_root_is_passed_as_root_only_and_lab_args_go_through(tmp_path):
    as_root, as_user = lab_line(fake_id(tmp_path, 0)), lab_line(fake_id(tmp_path, 1000))
    assert "jupyter lab --allow-root" in as_root
    assert "jupyter lab" in as_user and "--allow-root" not in as_user
    for line in (as_root, as_user):  # the project's JupyterLab defaults, before any the user had
        assert f'JUPYTER_CONFIG_PATH="{ROOT}/jupyter_config${{JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}}"' in line
    remote = lab_line(fake_id(tmp_path, 1000), "LAB_ARGS=--ip 0.0.0.0 --port 8890")
    assert remote.rstrip().endswith("jupyter lab  --ip 0.0.0.0 --port 8890")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, deadline: float):
    """GET ``url`` as JSON, retrying while the server is still starting (until ``deadline``)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """End the session started for ``proc`` (make, its shell and JupyterLab), politely first."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "jupyter").exists(), reason="no .venv (make setup makes it)")
def test_make_lab_serves_with_the_news_pop_up_off_and_the_users_own_settings_kept(tmp_path):
    """The real target (as root it passes --allow-root, else not; either way JupyterLab must answer).
    The user's own settings (here in a throwaway settings folder) win over the project's defaults and are
    left as they were."""
    user_settings = tmp_path / "user-settings"
    mine = user_settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"checkForUpdates": true}')
    # everything JupyterLab reads or writes for the user in tmp_path: the home folder stays as it was
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(user_settings), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = free_port(), "labkit-test-token"
    args = f"--no-browser --port {port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log = tmp_path / "lab.log"
    with open(log, "w") as out:  # a file, not a pipe nobody reads while the server runs
        lab = subprocess.Popen(["make", "-o", STAMP, "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                               start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a cold start on a busy 2-core machine; a hung one fails here
        try:
            status = get_json(f"{base}/api/status?token={token}", deadline)
        except (urllib.error.URLError, ConnectionError):
            pytest.fail(f"JupyterLab did not answer on port {port}:\n{log.read_text()}")
        assert "started" in status
        settings = get_json(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}",
                            deadline)
        # what the page uses, as JupyterLab composes it: the schema's defaults (the server has put the
        # overrides into them), then the user's own settings over them
        used = {**{k: p.get("default") for k, p in settings["schema"]["properties"].items()}, **settings["settings"]}
        assert used["fetchNews"] == "false"  # the project's default: never ask, never fetch
        assert used["checkForUpdates"] is True  # the user's own setting wins
    finally:
        stop(lab)
    assert mine.read_text() == '{"checkForUpdates": true}'
