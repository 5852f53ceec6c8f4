"""The device check's functions on the CPU at tiny sizes (the GPU run uses the same ones with
device="cuda"), its output and exit code, the bare-machine imports, and `make check-device`'s wheels."""
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from conftest import ROOT
from labkit.bench import check_device as cd
from labkit.bench.gpu import throwaway_root
from test_gpu import env_without_cuda, one_thread  # noqa: F401 -- one_thread: an autouse fixture

CPU = torch.device("cpu")
# The smoke profile with untrained backbones: no stand-in pre-training, so each check takes seconds.
TINY = {"q1": {"arch": "resnet18", "weights": "none"}, "q2": {"weights": "none"}}
# What the lent GPU machine lacks (it has torch, torchvision, numpy, pillow, scikit-learn, pandas,
# matplotlib, seaborn, pyyaml and tqdm).
ABSENT = ("papermill", "jupyter", "jupyterlab", "jupyter_client", "jupyter_core", "ipykernel", "IPython",
          "ipywidgets", "nbformat", "nbconvert", "pytorch_metric_learning", "playwright", "pypdf")


def test_every_check_passes_on_the_cpu(isolated_root, capsys):
    with throwaway_root():
        code = cd.run_checks(cd.checks(CPU, TINY))
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, lines
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * 6, lines
    assert lines[-1] == "check-device: 6 ok, 0 skipped, 0 failed"
    assert "q3 training + evaluation (smoke): 30 run(s) trained and tested on cpu" in lines[3]  # 15 x 2 seeds
    assert "ResNet-50" in lines[5] and "(allowed 5%)" in lines[5]


def test_the_user_root_is_left_alone(isolated_root):
    before = sorted(p.relative_to(isolated_root) for p in isolated_root.rglob("*"))
    with throwaway_root() as tmp:
        assert os.environ["LABKIT_ROOT"] == str(tmp) and (tmp / "notebooks" / "params").is_dir()
        cd.check_question("q3", CPU)
    assert not tmp.exists() and os.environ["LABKIT_ROOT"] == str(isolated_root)
    assert sorted(p.relative_to(isolated_root) for p in isolated_root.rglob("*")) == before


def test_checks_name_their_questions_and_list_the_gpu_paths():
    names = [name for name, _ in cd.checks(torch.device("cuda"), bench={"n_images": 8})]
    assert names[:4] == ["q1 training + evaluation (smoke)", "q2 ce + ce_center (smoke)", "q2 ce_triplet (smoke)",
                         "q3 training + evaluation (smoke)"]
    assert "Batches, pinned host memory (forced)" in names and names[-1] == "bench --gpu (short)"
    assert "Batches, pinned host memory (forced)" not in [name for name, _ in cd.checks(CPU)]


def test_batches_check_reports_the_path_it_took():
    assert "from host memory match the CPU's" in cd.check_batches(CPU)


def test_bf16_check_fails_when_autocast_is_not_taken(monkeypatch):
    import contextlib
    monkeypatch.setattr(cd, "_bf16", lambda device: contextlib.nullcontext())
    with pytest.raises(cd.CheckFailed, match="ResNet-50: autocast gave torch.float32, not bfloat16"):
        cd.check_bf16(CPU, batch=2)


def test_a_diverged_run_fails_its_check(isolated_root):
    only_sgd = {"runs_optimizers": [{"name": "sgd", "optimizer": "sgd"}], "runs_batch_sizes": [], "runs_order": [],
                "runs_betas": []}
    with throwaway_root(), pytest.raises(cd.CheckFailed, match="sgd: diverged"):
        cd.check_question("q3", CPU, {"lr": 1e30, "batch_size": 4, **only_sgd})


def test_failures_and_skips_are_one_line_each_and_set_the_exit_code(capsys):
    def boom():
        raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    def skip():
        raise cd.Skip(cd.TRIPLET_SKIPPED)

    assert cd.run_checks([("fine", lambda: "all good"), ("skipped one", skip), ("broken", boom)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ok      fine: all good (")
    assert lines[1].startswith("skipped skipped one: skipped (pytorch-metric-learning not installed; carry its wheel)")
    assert lines[2].startswith("FAILED  broken: RuntimeError: CUDA error: an illegal memory access was encountered (")
    assert lines[3] == "check-device: 1 ok, 1 skipped, 1 failed" and len(lines) == 4
    assert cd.run_checks([("skipped one", skip)]) == 0


def test_without_cuda_it_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labkit", "check-device"], env=env_without_cuda(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert done.stdout.startswith("check-device: no CUDA GPU is visible here") and done.stdout.count("\n") == 1


BARE_MACHINE = """
import importlib.abc, sys
ABSENT = {absent!r}

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the bare GPU machine)", name=name)

sys.meta_path.insert(0, Absent())
import torch
torch.set_num_threads(1)
from labkit import cli
assert cli.main(["check-device"]) == 0
from labkit.bench import gpu as bench_gpu
from labkit.bench import check_device as cd
from labkit.report import forecast as walltime
with bench_gpu.throwaway_root():
    q2 = [c for c in cd.checks(torch.device("cpu"), {{"q2": {{"weights": "none"}}}}) if c[0].startswith("q2")]
    print("exit", cd.run_checks(q2))
print("imported", sorted(m for m in sys.modules if m.split(".")[0] in ABSENT))
"""


def test_a_bare_gpu_machine_has_all_the_check_imports(isolated_root):
    """No notebook stack and no pytorch-metric-learning: the command still runs, Q2 trains without the
    triplet run (skipped, saying how to get it) and without retrieval metrics."""
    code = textwrap.dedent(BARE_MACHINE.format(absent=ABSENT))
    done = subprocess.run([sys.executable, "-c", code], env=env_without_cuda(isolated_root), cwd=isolated_root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("check-device: no CUDA GPU is visible here")
    assert "ok      q2 ce + ce_center (smoke): 2 run(s) trained and tested on cpu" in out
    assert "retrieval metrics left out (pytorch-metric-learning not installed)" in out
    assert ("skipped q2 ce_triplet (smoke): skipped (pytorch-metric-learning not installed; carry its wheel)"
            in out)
    assert "exit 0" in out and "imported []" in out


def fake_wheel(folder, name: str = "labkit_probe") -> None:
    """A minimal pure-Python wheel holding one module."""
    folder.mkdir()
    info = f"{name}-0.1.dist-info"
    files = {f"{name}.py": "WHERE = __file__\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-0.1-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def test_make_check_device_installs_carried_wheels_without_setup(tmp_path):
    """`make check-device` on a checkout without .venv: the wheels in .whl/ go into a temporary folder on
    PYTHONPATH (removed afterwards), the checkout is on it too, and the command's exit code comes back.
    A stand-in `labkit` package in a scratch checkout reports what it can import."""
    (tmp_path / "labkit").mkdir()
    (tmp_path / "labkit" / "__init__.py").write_text("")
    (tmp_path / "labkit" / "__main__.py").write_text(textwrap.dedent("""
        import os, sys
        import labkit_probe
        print("args", sys.argv[1:], "probe", os.path.dirname(labkit_probe.WHERE))
        sys.exit(3)
    """))
    fake_wheel(tmp_path / ".whl")
    done = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "check-device",
                           f"PYTHON={sys.executable}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode != 0, done.stdout  # the command's exit code 3 fails make
    assert "args ['check-device'] probe " in done.stdout, done.stdout + done.stderr
    site = done.stdout.split("probe ")[1].split()[0]
    assert not site.startswith(str(tmp_path)) and not os.path.exists(site)  # a temporary folder, removed
    assert not (tmp_path / ".venv").exists()
