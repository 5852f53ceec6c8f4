"""The notebook registry, the parameter files of every profile, and the parameters cells themselves: a bad
YAML or an undeclared name is caught here, in milliseconds, not after a report has run for minutes."""
import ast
import inspect
import json
import os
import re

import papermill
import pytest
import yaml

from labkit.questions import registry
from labkit.questions import q1_transfer
from labkit.questions import q2_losses
from labkit.questions import q3_optimizers
from labkit.params import COMMON, PROFILES, ParameterError, from_notebook, unknown_parameters

from conftest import ROOT

QUESTIONS = {"q1": q1_transfer, "q2": q2_losses, "q3": q3_optimizers}
CASES = [(key, profile) for key in QUESTIONS for profile in PROFILES]


@pytest.fixture(autouse=True)
def checkout_root(monkeypatch):
    """The registry reads the checkout's notebooks (tests that need another root set LABKIT_ROOT)."""
    monkeypatch.delenv("LABKIT_ROOT", raising=False)


def cells(key: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / registry.NOTEBOOKS[key]).read_text())["cells"]


def parameters_cell(key: str) -> str:
    (cell,) = [c for c in cells(key) if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])


def declared(key: str) -> dict:
    """papermill's own reading of the parameters cell: name -> {inferred_type_name, default, help}."""
    return papermill.inspect_notebook(str(ROOT / "notebooks" / registry.NOTEBOOKS[key]))


def test_registry():
    assert registry.NOTEBOOKS == {"q1": "q1_stl10_transfer.ipynb", "q2": "q2_tinyimagenet_losses.ipynb",
                                  "q3": "q3_dogs_vs_cats_optimizers.ipynb"}
    assert [registry.question(k).__name__ for k in registry.QUESTIONS] == [
        "labkit.questions.q1_transfer", "labkit.questions.q2_losses", "labkit.questions.q3_optimizers"]
    assert registry.notebooks_dir() == ROOT / "notebooks"
    assert registry.available() == ["q1", "q2", "q3"]
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(registry.NOTEBOOKS.values())


def test_available_lists_the_notebooks_present_under_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    assert registry.notebooks_dir() == tmp_path.resolve() / "notebooks" and registry.available() == []
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "q3_dogs_vs_cats_optimizers.ipynb").write_text("{}")
    assert registry.available() == ["q3"]


@pytest.mark.parametrize("key, profile", CASES)
def test_load_params(key, profile):
    params = registry.load_params(profile, key)
    path = ROOT / "notebooks" / "params" / profile / f"{key}.yaml"
    assert params == yaml.safe_load(path.read_text()) and params["profile"] == profile


def test_load_params_missing_and_empty_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError) as missing:
        registry.load_params("demo", "q1")
    assert str(missing.value) == (f"no parameter file {tmp_path.resolve() / 'notebooks/params/demo/q1.yaml'}; "
                                  f"profiles: demo, cpu, full, smoke")
    (tmp_path / "notebooks" / "params" / "demo").mkdir(parents=True)
    (tmp_path / "notebooks" / "params" / "demo" / "q1.yaml").write_text("# only a comment\n")
    assert registry.load_params("demo", "q1") == {}


def test_check_names_refuses_an_undeclared_name():
    notebook = ROOT / "notebooks" / registry.NOTEBOOKS["q3"]
    registry.check_names(notebook, {"lr": 0.1, "runs_order": [], "profile": "smoke"})  # declared: fine
    with pytest.raises(ParameterError) as refused:
        registry.check_names(notebook, {"lr": 0.1, "learning_rate": 0.1, "epoch": 2})
    expected = unknown_parameters({"learning_rate", "epoch"}, set(declared("q3")), f"{notebook.name}: ")
    assert str(refused.value) == str(expected)
    assert str(refused.value).startswith("q3_dogs_vs_cats_optimizers.ipynb: unknown parameter(s) 'epoch', "
                                         "'learning_rate'; allowed: batch_size, betas, data_dir, data_source, ")


@pytest.mark.parametrize("key", QUESTIONS)
def test_default_parameters_are_the_cells_values(key):
    cell = {name: ast.literal_eval(p["default"]) for name, p in declared(key).items()}
    assert registry.default_parameters(key) == cell


def test_default_parameters_with_a_profile_file_over_them():
    smoke = yaml.safe_load((ROOT / "notebooks" / "params" / "smoke" / "q3.yaml").read_text())
    cell = registry.default_parameters("q3")
    got = registry.default_parameters("q3", "smoke")
    assert got == {**cell, **smoke} and list(got) == list(cell)  # no new name, the cell's order
    assert (got["profile"], got["image_size"], got["epochs"], got["lr"]) == ("smoke", 16, 1, 1e-3)
    assert got["runs_batch_sizes"] == cell["runs_batch_sizes"] and got["runs_optimizers"] == smoke["runs_optimizers"]


@pytest.mark.parametrize("key, profile", CASES)
def test_every_profile_file_validates_against_its_notebook(key, profile):
    """What the report checks before any notebook runs: the names (papermill's reading of the cell) and
    the values and runs (the question module's own parameters() and plan())."""
    registry.check_names(ROOT / "notebooks" / registry.NOTEBOOKS[key], registry.load_params(profile, key))
    module = QUESTIONS[key]
    P = module.parameters(registry.default_parameters(key, profile))
    assert P["profile"] == profile
    planned = module.plan(P)
    runs = {n: r for part in planned.values() for n, r in part.items()}
    assert runs and all(len(per_seed) >= 1 for per_seed in runs.values())


@pytest.mark.parametrize("key", QUESTIONS)
def test_the_parameters_cell_declares_exactly_the_specs(key):
    """Every name the module checks, and nothing else: a name the cell declared but the module did not know
    would stop the notebook in its first cell; one the module knew but the cell lacked could not be set."""
    names = set(declared(key))
    assert names == set(COMMON) | set(QUESTIONS[key].PARAM_SPECS)


@pytest.mark.parametrize("key", QUESTIONS)
def test_every_parameter_the_notebook_or_its_module_reads_is_declared(key):
    read = re.compile(r"""\bP\[["'](\w+)["']\]""")
    code = "\n".join("".join(c["source"]) for c in cells(key) if c["cell_type"] == "code")
    used = set(read.findall(code)) | set(read.findall(inspect.getsource(QUESTIONS[key])))
    assert used and used <= set(declared(key)), used - set(declared(key))


@pytest.mark.parametrize("key", QUESTIONS)
def test_every_parameter_is_typed_and_documented(key):
    for name, p in declared(key).items():
        assert p["help"].strip(), f"{key}: {name} has no trailing # comment (papermill --help-notebook)"
        assert p["inferred_type_name"] != "None", f"{key}: {name} has no type annotation"
        if p["default"] == "None":
            assert p["inferred_type_name"].startswith("Optional["), f"{key}: {name}"


@pytest.mark.parametrize("key", QUESTIONS)
def test_the_notebook_refuses_an_injected_name_as_the_report_does(key):
    """Plain papermill injects ``-p learning_rate 0.1`` after the parameters cell and only warns: the
    notebook's first cell stops with the same error that ``python -m labkit report`` gives."""
    injected = "# Parameters\nlearning_rate = 0.1\nprofile = \"smoke\"\n"
    namespace = {}
    exec(parameters_cell(key), namespace)
    exec(injected, namespace)
    namespace["In"] = ["", parameters_cell(key), injected, f"P = {key}.parameters(globals())"]
    with pytest.raises(ParameterError) as in_notebook:
        QUESTIONS[key].parameters(namespace)
    notebook = ROOT / "notebooks" / registry.NOTEBOOKS[key]
    with pytest.raises(ParameterError) as from_report:
        registry.check_names(notebook, {"learning_rate": 0.1, "profile": "smoke"})
    assert str(from_report.value) == f"{notebook.name}: {in_notebook.value}"
    del namespace["learning_rate"], namespace["In"]
    assert from_notebook(namespace, QUESTIONS[key].PARAM_SPECS, key)["profile"] == "smoke"


def test_plain_papermill_with_an_unknown_parameter_stops_in_the_first_cell(isolated_root):
    """papermill only warns about a name the notebook does not declare; the notebook's first cell refuses it
    with the same message as ``make report``, before any data is loaded."""
    out = isolated_root / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(registry.notebooks_dir() / registry.NOTEBOOKS["q3"]), str(out),
                                   parameters={"profile": "smoke", "learning_rate": 0.1},
                                   cwd=str(registry.notebooks_dir()), kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError" and "unknown parameter(s) 'learning_rate'" in err.value.evalue
    executed = json.loads(out.read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c["outputs"]))
    assert failed == 2  # parameters, papermill's injected cell, then the first cell of the notebook's own
    assert not (isolated_root / "data" / "synthetic").exists()  # nothing was loaded


@pytest.mark.parametrize("key", QUESTIONS)
def test_every_notebook_runs_with_every_run_list_empty(isolated_root, key):
    """An empty run list skips its part: each part and the conclusion say so, nothing trains, nothing fails
    (the Q2 notebook once named a count `skipped`, hiding the helper, and failed exactly here)."""
    lists = [name for name in QUESTIONS[key].PARAM_SPECS if name == "runs" or name.startswith("runs_")]
    out = isolated_root / "out.ipynb"
    papermill.execute_notebook(str(registry.notebooks_dir() / registry.NOTEBOOKS[key]), str(out),
                               parameters={**registry.load_params("smoke", key), **{name: [] for name in lists}},
                               cwd=str(registry.notebooks_dir()), kernel_name="python3", progress_bar=False)
    text = json.dumps([o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])])
    for name in lists:
        assert f"skipped (no runs in `{name}`)" in text, name
    assert "Conclusion: skipped" in text or key == "q3"
    assert not (isolated_root / "data" / "cache" / "checkpoints").exists() or \
        not list((isolated_root / "data" / "cache" / "checkpoints").iterdir())


FAIL_RUNS = """import os, importlib
_failing = set(os.environ["LABKIT_TEST_FAIL_RUNS"].split(","))
_module = importlib.import_module(os.environ["LABKIT_TEST_FAIL_MODULE"])
_original = _module.train_and_test

def train_and_test(run, *args, **kwargs):
    if run.name in _failing:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by the test)")
    return _original(run, *args, **kwargs)

_module.train_and_test = train_and_test
"""
# Runs that fail in each notebook: in every part, one failing beside one that trains (Q1's b-I has both);
# the smallest run lists that cover every figure cell.
FAILING = {
    "q1": ({"runs": [{"name": "svm"}, {"name": "zero_shot"}, {"name": "zero_shot_restricted"}, {"name": "finetune"}]},
           ["svm", "zero_shot", "finetune"]),
    "q2": ({"runs": [{"name": "ce", "loss": "ce"}, {"name": "ce_center", "loss": "ce_center"}]}, ["ce"]),
    "q3": ({"runs_optimizers": [{"name": "sgd", "optimizer": "sgd", "lr": 0.001},
                                {"name": "adam", "optimizer": "adam"}],
            "runs_batch_sizes": [{"name": "adam_bs16", "optimizer": "adam", "batch_size": 16},
                                 {"name": "adam_bs32", "optimizer": "adam", "batch_size": 32}],
            "runs_order": [{"name": "shuffled", "optimizer": "adam", "order": "shuffle"},
                           {"name": "sorted", "optimizer": "adam", "order": "class_sorted"}],
            "runs_betas": [{"name": "adam_b1_0.0_b2_0.0", "betas": [0.0, 0.0]},
                           {"name": "adam_b1_0.9_b2_0.999", "betas": [0.9, 0.999]}]},
           ["sgd", "adam_bs16", "sorted", "adam_b1_0.0_b2_0.0"]),
}


@pytest.mark.parametrize("key", QUESTIONS)
def test_a_failed_run_is_reported_and_the_notebook_goes_on(isolated_root, key, monkeypatch):
    """A run that raises (here a simulated out-of-memory, injected into the kernel through sitecustomize) is
    `failed` in metrics.json with its error and the advice; the other runs train, every cell runs, and the
    figures name the failed runs instead of plotting them."""
    hook = isolated_root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_RUNS)
    runs, failing = FAILING[key]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("LABKIT_TEST_FAIL_RUNS", ",".join(failing))
    monkeypatch.setenv("LABKIT_TEST_FAIL_MODULE", QUESTIONS[key].__name__)
    out_dir = isolated_root / "out"
    out_dir.mkdir()
    papermill.execute_notebook(str(registry.notebooks_dir() / registry.NOTEBOOKS[key]), str(out_dir / "nb.ipynb"),
                               parameters={**registry.load_params("smoke", key), "output_dir": str(out_dir), **runs},
                               cwd=str(registry.notebooks_dir()), kernel_name="python3", progress_bar=False)
    recorded = json.loads((out_dir / "metrics.json").read_text())["runs"]
    for name in failing:
        assert recorded[name]["status"] == "failed", name
        assert "out of memory" in recorded[name]["error"] and "try a smaller batch_size" in recorded[name]["error"]
    trained = [name for part in runs.values() for name in (r["name"] for r in part) if name not in failing]
    assert trained and all(recorded[name]["status"] != "failed" for name in trained)
    cells = json.loads((out_dir / "nb.ipynb").read_text())["cells"]
    shown = json.dumps([o for c in cells for o in c.get("outputs", [])])
    assert shown.count("**Failed** (the other runs went on; not in the figures)") >= len(failing) - (key == "q1")
    flagged = {"q1": "features + SVM (failed)", "q2": "`ce` (failed)", "q3": "**failed**"}[key]
    assert flagged in shown  # the conclusion names it too


def test_titles_name_the_architecture_the_parameters_train():
    """The index said "ResNet-50" for Q1 while the demo ran ResNet-18: the title comes from the run's parameters."""
    assert registry.title("q1", {"arch": "resnet18"}) == "Q1 · STL-10 transfer learning (ResNet-18)"
    assert registry.title("q1", registry.load_params("full", "q1")) == "Q1 · STL-10 transfer learning (ResNet-50)"
    assert registry.title("q1") == "Q1 · STL-10 transfer learning (ResNet-18)"  # the demo's, in the cell
    assert registry.title("q2") == "Q2 · Tiny ImageNet losses (ResNet-18)"
    assert registry.title("q3") == "Q3 · Dogs vs Cats optimizers (small CNN)"


def test_defaults_are_read_from_the_cell_without_running_it(tmp_path):
    """``ast.literal_eval`` of each assignment: the package never executes its notebooks' cells."""
    assert registry.cell_defaults('x: int = 3  # a comment\ny: list = [{"name": "a"}]\nz: Optional[str] = None\n'
                                  'from typing import Optional\n') == {"x": 3, "y": [{"name": "a"}], "z": None}
    with pytest.raises(ValueError):
        registry.cell_defaults("x: int = __import__('os').getpid()\n")
    assert registry.default_parameters("q3")["runs_order"][1] == {"name": "sorted", "optimizer": "adam",
                                                                  "order": "class_sorted"}


def test_the_cpu_profile_names_what_it_reduces_against_the_full_profile():
    q2 = registry.reductions("q2", registry.resolved_parameters("q2", "cpu"))
    assert "image_size 64 (full: 224)" in q2 and "train_per_class 300 (full: all)" in q2
    assert "ce: lr 0.0001 (full: 1e-05), epochs 2 (full: 12)" in q2
    q3 = registry.reductions("q3", registry.resolved_parameters("q3", "cpu"))
    assert "adam_bs16, adam_bs32, adam_bs64: epochs 5 (full: 12)" in q3  # runs with the same change share one phrase
    assert not any(r.startswith("sgd:") for r in q3)  # mini-batch SGD keeps the original's 5 epochs
    timing = registry.reductions("q1", registry.resolved_parameters("q1", "cpu", weights="none"))
    assert "weights none (full: imagenet)" in timing
    assert registry.reductions("q1", registry.resolved_parameters("q1", "full")) == []
    assert registry.reductions("q1", registry.resolved_parameters("q1", "demo")) == []  # synthetic: said elsewhere
