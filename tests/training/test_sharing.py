"""Runs that share a machine: the registry of running trainings and each one's fair share of the threads,
recorded and restored on resume; the per-run lock, with two real processes starting the same run."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.training import sharing
from labkit.paths import cache_dir

ROOT = Path(__file__).resolve().parents[2]

# The same small run in the test and in a second process: same data, model, optimizer, checkpoint.
SETUP = r"""
import sys, time
from pathlib import Path
import torch
from labkit.data import Batches
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.training.loop import fit

def train(path, epochs=3, on_update=None):
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=8)
    images = torch.randint(0, 255, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    history = fit(model, Batches(images, torch.arange(32) % 2, 8, seed=0), epochs=epochs,
                  optimizer=make_optimizer("sgd", model.parameters(), 0.05), checkpoint=path, on_update=on_update,
                  progress=False)
    return model, history
"""
# 4 updates per epoch: the second process says when it trains, then goes slowly (or stops for good after epoch 1)
SECOND = SETUP + r"""
def on_update(update, model):
    if update == 1:
        print("training", flush=True)
    if update == 5 and sys.argv[2] == "stall":
        print("epoch 1 saved", flush=True)
        time.sleep(600)
    time.sleep(0.2)

train(Path(sys.argv[1]), on_update=on_update)
print("done", flush=True)
"""


def start_second(path: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    return subprocess.Popen([sys.executable, "-c", SECOND, str(path), mode], env=env, stdout=subprocess.PIPE,
                            text=True)


def wait_for(proc: subprocess.Popen, line: str, timeout: float = 300) -> None:
    """The second process's next line, read by a thread of its own so a hung process fails the test after
    ``timeout`` seconds (generous: a loaded machine) instead of blocking the suite."""
    import queue
    import threading
    lines = getattr(proc, "lines", None)
    if lines is None:
        lines = proc.lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] + [lines.put("")], daemon=True).start()
    try:
        got = lines.get(timeout=timeout).strip()
    except queue.Empty:
        proc.kill()
        pytest.fail(f"the second process said nothing within {timeout} s (waiting for {line!r})")
    assert got == line, f"the second process said {got!r} (exit {proc.poll()})"


def in_process():
    namespace = {}
    exec(SETUP, namespace)
    return namespace["train"]


def test_fair_share():
    assert sharing.fair_share(1, 2, 2) == 2  # alone: what it had
    assert [sharing.fair_share(n, 16, 16) for n in (2, 3, 5, 40)] == [8, 5, 3, 1]  # at least 1
    assert sharing.fair_share(2, 16, 4) == 4  # never more than the process had (a sweep worker's OMP_NUM_THREADS)


def test_the_registry_ignores_and_removes_entries_of_dead_processes(isolated_root):
    folder = cache_dir("running")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid}))
    (folder / f"{os.getppid()}.json").write_text(json.dumps({"pid": os.getppid()}))
    (folder / "garbage.json").write_text("{half")
    assert [e["pid"] for e in sharing.running()] == [os.getppid()]
    assert not (folder / f"{dead.pid}.json").exists()


@pytest.fixture
def four_threads(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    monkeypatch.setattr(sharing, "cores", lambda: 4)
    yield
    torch.set_num_threads(before)


def test_a_training_takes_its_share_and_gives_it_back(isolated_root, four_threads, monkeypatch):
    entry = cache_dir("running") / f"{os.getpid()}.json"
    (cache_dir("running") / f"{os.getppid()}.json").write_text(json.dumps({"pid": os.getppid()}))  # another run
    with sharing.cpu_threads(torch.device("cpu")) as threads:
        assert threads == 2 == torch.get_num_threads() and entry.exists()
    assert torch.get_num_threads() == 4 and not entry.exists()
    with sharing.cpu_threads(torch.device("cpu"), recorded=3) as threads:  # a resumed run keeps its own count
        assert threads == 3 == torch.get_num_threads()
    with sharing.cpu_threads(torch.device("cuda")) as threads:  # CUDA: threads left alone, not registered
        assert threads is None and torch.get_num_threads() == 4 and not entry.exists()
    monkeypatch.setenv(sharing.SHARE_ENV, "0")
    with sharing.cpu_threads(torch.device("cpu")) as threads:
        assert threads == 4 and not entry.exists()


def test_the_thread_count_is_recorded_and_a_resumed_run_keeps_it(isolated_root, four_threads, tmp_path):
    train = in_process()
    other = cache_dir("running") / f"{os.getppid()}.json"
    other.write_text(json.dumps({"pid": os.getppid()}))
    seen = []

    def stop_in_epoch_2(update, _model):
        seen.append(torch.get_num_threads())
        if update == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run.pt", on_update=stop_in_epoch_2)
    assert set(seen) == {2} and torch.load(tmp_path / "run.pt", weights_only=True)["threads"] == 2
    other.unlink()  # alone now: a new run would take 4 threads, the resumed one goes on with its 2
    seen.clear()
    _, history = train(tmp_path / "run.pt", on_update=lambda update, model: seen.append(torch.get_num_threads()))
    assert history.resumed_from_epoch == 1 and history.threads == 2 and set(seen) == {2}
    assert history.cost()["torch_threads"] == 2  # what metrics.json records for the run
    assert torch.get_num_threads() == 4


def test_a_second_process_on_the_same_run_waits_and_reuses_the_result(isolated_root, tmp_path, capsys):
    path = tmp_path / "q3-adam-0123456789abcdef.pt"
    second = start_second(path, "slow")
    try:
        wait_for(second, "training")
        updates = []
        _, history = in_process()(path, on_update=lambda update, model: updates.append(update))
        assert f"waiting for process {second.pid}, which is training the same run ({path.name})" in \
            capsys.readouterr().out
        wait_for(second, "done")
    finally:
        second.kill()
        second.wait()
    assert updates == [] and history.resumed_from_epoch == 3 and len(history.epochs) == 3  # not trained twice
    assert torch.load(path, weights_only=True)["final"] and not sharing.lock_path(path).exists()


def test_a_killed_run_releases_its_lock_and_the_next_one_resumes_it(isolated_root, tmp_path):
    path = tmp_path / "q3-adam-0123456789abcdef.pt"
    second = start_second(path, "stall")
    try:
        wait_for(second, "training")
        wait_for(second, "epoch 1 saved")
        assert sharing.is_locked(path)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    assert not sharing.is_locked(path) and sharing.lock_path(path).exists()  # the kernel let go; the file stays
    recorded = torch.load(path, weights_only=True)["threads"]
    _, history = in_process()(path)
    assert history.resumed_from_epoch == 1 and len(history.epochs) == 3 and history.threads == recorded
    assert not sharing.lock_path(path).exists()
