"""Parameter validation: a bad or unknown parameter is refused before any work, naming it and the allowed
values, whoever injected it (the report, a sweep, plain papermill, a line typed into the parameters cell)."""
import pytest

from labkit.params import (COMMON, ParameterError, Spec, from_notebook, unknown_parameters, validate,
                           validate_runs)


def test_check_types_and_bool_is_not_an_int():
    assert Spec(int).check("n", 3) == 3
    assert Spec(str).check("s", "x") == "x"
    assert Spec(bool).check("b", False) is False
    assert Spec((list, tuple)).check("betas", (0.9, 0.99)) == (0.9, 0.99)
    with pytest.raises(ParameterError, match=r"^parameter 'n' = True has the wrong type; allowed: an integer$"):
        Spec(int).check("n", True)
    with pytest.raises(ParameterError, match=r"^parameter 'n' = 2\.0 has the wrong type; allowed: an integer$"):
        Spec(int).check("n", 2.0)
    with pytest.raises(ParameterError, match=r"^parameter 'b' = 1 has the wrong type; allowed: true or false$"):
        Spec(bool).check("b", 1)
    with pytest.raises(ParameterError, match=r"allowed: a list or tuple$"):
        Spec((list, tuple)).check("betas", "0.9,0.99")


def test_check_float_accepts_an_int_but_not_a_bool():
    value = Spec(float).check("lr", 1)
    assert value == 1.0 and type(value) is float
    assert Spec(float).check("lr", 1e-3) == 1e-3
    with pytest.raises(ParameterError, match=r"^parameter 'lr' = True has the wrong type; allowed: a number$"):
        Spec(float).check("lr", True)
    with pytest.raises(ParameterError, match="wrong type"):
        Spec(float).check("lr", "1e-3")  # YAML 1.1 reads 1e-3 as a string: refused, not silently cast


def test_check_choices_and_bounds():
    spec = Spec(str, ("sgd", "adam"))
    assert spec.check("optimizer", "adam") == "adam"
    with pytest.raises(ParameterError, match=r"^parameter 'optimizer' = 'adamw' is not allowed; "
                                             r"allowed: 'sgd', 'adam'$"):
        spec.check("optimizer", "adamw")
    bounded = Spec(float, min=0.01, max=0.99)
    assert bounded.check("f", 0.01) == 0.01 and bounded.check("f", 0.99) == 0.99  # bounds are inclusive
    with pytest.raises(ParameterError, match=r"^parameter 'f' = 1\.0 is out of range; "
                                             r"allowed: a number in \[0\.01, 0\.99\]$"):
        bounded.check("f", 1)
    with pytest.raises(ParameterError, match=r"^parameter 'batch_size' = 0 is out of range; allowed: an integer >= 1$"):
        Spec(int, min=1).check("batch_size", 0)
    with pytest.raises(ParameterError, match="out of range"):
        Spec(int, max=3).check("k", 4)


def test_check_optional():
    assert Spec(str, optional=True).check("data_dir", None) is None
    with pytest.raises(ParameterError, match=r"^parameter 'epochs' is missing \(None\); allowed: an integer >= 0$"):
        Spec(int, min=0).check("epochs", None)
    with pytest.raises(ParameterError, match=r"allowed: a string or None \(default: here\)$"):
        Spec(str, optional=True, note="default: here").check("data_dir", 3)


def test_allowed_texts():
    assert Spec(str, ("a", "b"), note="(or a path)").allowed() == "'a', 'b' (or a path)"
    assert Spec(int, min=16, max=1024).allowed() == "an integer in [16, 1024]"
    assert Spec(list, note="training seeds").allowed() == "a list (training seeds)"
    assert Spec(dict).allowed() == "a mapping"


def test_validate_resolves_and_fills_output_dir(isolated_root, tmp_path):
    specs = {"optimizer": Spec(str, ("sgd", "adam")), "weights": Spec(str)}
    ok = validate({"profile": "demo", "lr": 1, "optimizer": "adam", "weights": "standin"}, specs, "q3")
    assert ok == {"profile": "demo", "lr": 1.0, "optimizer": "adam", "weights": "standin",
                  "output_dir": str(isolated_root.resolve() / "reports" / "demo" / "q3")}
    assert validate({"profile": "smoke", "output_dir": "/tmp/x"}, specs, "q1")["output_dir"] == "/tmp/x"
    assert "output_dir" not in validate({"lr": 0.1}, specs, "q1")  # no profile: nothing to fill it from
    state = tmp_path / "resnet.pt"
    state.write_bytes(b"")
    assert validate({"weights": str(state)}, specs, "q1")["weights"] == str(state)  # a state-dict file


def test_validate_names_the_parameter_and_allowed_values():
    specs = {"optimizer": Spec(str, ("sgd", "adam")), "weights": Spec(str)}
    with pytest.raises(ParameterError, match=r"'optimizer' = 'adamw' is not allowed; allowed: 'sgd', 'adam'"):
        validate({"optimizer": "adamw"}, specs, "q3")
    with pytest.raises(ParameterError, match="'profile' = 'fast' is not allowed; allowed: 'demo', 'cpu', 'full', 'smoke'"):
        validate({"profile": "fast"}, specs, "q3")
    with pytest.raises(ParameterError, match="'batch_size' = 0 is out of range"):
        validate({"batch_size": 0}, specs, "q3")
    with pytest.raises(ParameterError, match=r"^parameter 'weights' = '/no/such/file\.pt' is not allowed; allowed: "
                                             r"a string \('standin', 'standin-smoke', 'imagenet', 'none' or the path"):
        validate({"weights": "/no/such/file.pt"}, specs, "q3")


def test_validate_refuses_unknown_names_with_the_allowed_list():
    specs = {"optimizer": Spec(str, ("sgd", "adam"))}
    allowed = ", ".join(sorted({*COMMON, "optimizer"}))
    with pytest.raises(ParameterError) as refused:
        validate({"learning_rate": 0.1, "lr": 0.1, "epoch": 3}, specs, "q3")
    assert str(refused.value) == f"unknown parameter(s) 'epoch', 'learning_rate'; allowed: {allowed}"


def test_unknown_parameters_message():
    err = unknown_parameters({"b", "a"}, ["y", "x"], "q3.ipynb: ")
    assert isinstance(err, ParameterError)
    assert str(err) == "q3.ipynb: unknown parameter(s) 'a', 'b'; allowed: x, y"
    assert str(unknown_parameters(["lr2"], {"lr"})) == "unknown parameter(s) 'lr2'; allowed: lr"


def test_validate_runs():
    specs = {"lr": Spec(float, min=0.0), "optimizer": Spec(str, ("sgd", "adam"))}
    assert validate_runs([], specs) == []
    runs = validate_runs([{"name": "a", "lr": 1}, {"name": "b", "optimizer": "sgd"}], specs)
    assert runs == [{"name": "a", "lr": 1.0}, {"name": "b", "optimizer": "sgd"}] and type(runs[0]["lr"]) is float
    with pytest.raises(ParameterError, match=r"^parameter 'runs_order' must be a list of runs"):
        validate_runs({"name": "a"}, specs, "runs_order")
    with pytest.raises(ParameterError, match=r"^runs\[1\] = 'b' must be a dict with a string 'name'$"):
        validate_runs([{"name": "a"}, "b"], specs)
    with pytest.raises(ParameterError, match=r"^runs\[0\] = \{'lr': 0\.1\} must be a dict with a string 'name'$"):
        validate_runs([{"lr": 0.1}], specs)
    with pytest.raises(ParameterError, match=r"^runs\[1\]: the name 'a' is used twice"):
        validate_runs([{"name": "a"}, {"name": "a"}], specs)
    with pytest.raises(ParameterError, match=r"^runs\[0\] \(a\): unknown key\(s\) 'momentun'; "
                                             r"allowed: name, lr, optimizer$"):
        validate_runs([{"name": "a", "momentun": 0.9}], specs)
    with pytest.raises(ParameterError, match=r"^parameter 'runs_x\[0\]\.optimizer' = 'adamw' is not allowed"):
        validate_runs([{"name": "a", "optimizer": "adamw"}], specs, "runs_x")


# ----------------------------------------------------------------------------- from_notebook

SPECS = {"optimizer": Spec(str, ("sgd", "adam")), "runs": Spec(list)}
PARAMETERS_CELL = '''"""The parameters."""
from typing import Optional
import math

profile: str = "smoke"  # profile
lr: float = 1e-3  # learning rate
data_dir: Optional[str] = None  # data
optimizer: str = "adam"  # optimizer
runs: list = []  # runs
'''
CURRENT = "P = q3.parameters(globals())"


def namespace(*cells: str, **values) -> dict:
    """A kernel's globals after running ``cells`` (IPython's ``In``: an empty first entry, the cell
    running now last), with ``values`` as what those cells assigned."""
    import math
    from typing import Optional
    defaults = {"profile": "smoke", "lr": 1e-3, "data_dir": None, "optimizer": "adam", "runs": []}
    return {"In": ["", *cells, CURRENT], "Optional": Optional, "math": math, "__name__": "__main__",
            **defaults, **values}


def test_from_notebook_reads_the_declared_names(isolated_root):
    P = from_notebook(namespace(PARAMETERS_CELL, plt="a module", helper=3), SPECS, "q3")
    assert P == {"profile": "smoke", "lr": 1e-3, "data_dir": None, "optimizer": "adam", "runs": [],
                 "output_dir": str(isolated_root.resolve() / "reports" / "smoke" / "q3")}  # imports are fine


def test_an_injected_unknown_name_is_refused_by_name():
    injected = "# Parameters\nlearning_rate = 0.1\nlr = 0.01\n"  # what plain papermill -p adds after the cell
    with pytest.raises(ParameterError) as refused:
        from_notebook(namespace(PARAMETERS_CELL, injected, learning_rate=0.1, lr=0.01), SPECS, "q3")
    assert str(refused.value).startswith("unknown parameter(s) 'learning_rate'; allowed: ")
    assert str(refused.value) == str(unknown_parameters({"learning_rate"}, {**COMMON, **SPECS}))


def test_a_name_typed_into_the_parameters_cell_is_refused():
    typo = PARAMETERS_CELL + "optimiser: str = \"sgd\"  # a typo\n"
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'optimiser'"):
        from_notebook(namespace(typo, optimiser="sgd"), SPECS, "q3")


def test_a_declared_injected_value_is_checked():
    with pytest.raises(ParameterError, match=r"^parameter 'optimizer' = 'adamw' is not allowed"):
        from_notebook(namespace(PARAMETERS_CELL, "optimizer = 'adamw'\n", optimizer="adamw"), SPECS, "q3")


def test_an_ordinary_code_cell_is_not_taken_for_parameters():
    ordinary = "import numpy as np\nhelper = np.zeros(3)\nprint(helper)\n"
    P = from_notebook(namespace(PARAMETERS_CELL, "lr = 0.5\n", ordinary, lr=0.5, helper=[0, 0, 0]), SPECS, "q3")
    assert P["lr"] == 0.5 and "helper" not in P
    # the same cell made of assignments only, run between the parameters and this cell, is not ordinary
    with pytest.raises(ParameterError, match=r"'helper'"):
        from_notebook(namespace(PARAMETERS_CELL, "helper = 3\n", helper=3), SPECS, "q3")


def test_cells_before_the_annotated_parameters_cell_are_not_read():
    earlier = "scratch = 1\n"  # run before the parameters cell (e.g. in JupyterLab, out of order)
    P = from_notebook(namespace(earlier, PARAMETERS_CELL, "", scratch=1), SPECS, "q3")  # "" : an empty cell
    assert "scratch" not in P


def test_a_rerun_parameters_cell_is_the_one_read():
    first = PARAMETERS_CELL + "oops = 1\n"
    P = from_notebook(namespace(first, CURRENT, PARAMETERS_CELL, oops=1), SPECS, "q3")  # fixed and run again
    assert "oops" not in P


def test_outside_ipython_only_declared_names_count():
    ns = namespace(PARAMETERS_CELL, learning_rate=0.1)
    del ns["In"]
    assert "learning_rate" not in from_notebook(ns, SPECS, "q3")
    ns["In"] = "not IPython's list"
    assert "learning_rate" not in from_notebook(ns, SPECS, "q3")
