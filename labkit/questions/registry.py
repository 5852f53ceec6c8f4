"""The notebook registry: which notebooks exist, their titles, their per-profile parameter files, and
the check that refuses parameters a notebook does not declare. The report and the sweeps share it."""
from __future__ import annotations

from pathlib import Path

import yaml

from labkit.params import PROFILES, ParameterError, unknown_parameters
from labkit.paths import project_root

NOTEBOOKS = {"q1": "q1_stl10_transfer.ipynb", "q2": "q2_tinyimagenet_losses.ipynb",
             "q3": "q3_dogs_vs_cats_optimizers.ipynb"}
# The module that does each notebook's work: the report and sweeps check parameters with it before running.
MODULES = {"q1": "labkit.questions.q1_transfer", "q2": "labkit.questions.q2_losses", "q3": "labkit.questions.q3_optimizers"}
TITLES = {"q1": "Q1 · STL-10 transfer learning (ResNet-50)", "q2": "Q2 · Tiny ImageNet losses (ResNet-18)",
          "q3": "Q3 · Dogs vs Cats optimizers (small CNN)"}


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def available() -> list[str]:
    return [k for k, name in NOTEBOOKS.items() if (notebooks_dir() / name).exists()]


def load_params(profile: str, key: str) -> dict:
    """The flat parameter file ``notebooks/params/<profile>/<key>.yaml`` (as ``papermill -f`` reads it)."""
    path = notebooks_dir() / "params" / profile / f"{key}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no parameter file {path}; profiles: {', '.join(PROFILES)}")
    return yaml.safe_load(path.read_text()) or {}


def check_names(notebook: Path, params: dict) -> None:
    """Refuse parameters the notebook does not declare, before anything runs (papermill only warns)."""
    import papermill
    declared = set(papermill.inspect_notebook(str(notebook)))
    unknown = set(params) - declared
    if unknown:
        raise unknown_parameters(unknown, declared, f"{notebook.name}: ")


def default_parameters(key: str, profile: str | None = None) -> dict:
    """A notebook's parameters as it would run them: its parameters cell (the demo values), with the
    profile's file over them. Lets code outside a kernel (tests, benchmarks, the device check) call the
    question modules with exactly the notebook's settings."""
    import json
    cells = json.loads((notebooks_dir() / NOTEBOOKS[key]).read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec(compile(source, f"{NOTEBOOKS[key]}:parameters", "exec"), namespace)  # the project's own cell
    values = {k: v for k, v in namespace.items() if not k.startswith("__") and k != "Optional"}
    if profile is not None:
        values.update(load_params(profile, key))
    return values


def validate(key: str, params: dict) -> None:
    """Check a notebook's parameters as its first cell will (names, values, every run list), so that
    ``make report`` or a sweep stops before anything runs instead of failing in a later notebook.
    Raises :class:`labkit.params.ParameterError` naming the notebook."""
    import importlib
    check_names(notebooks_dir() / NOTEBOOKS[key], params)
    if key not in MODULES:
        return
    module = importlib.import_module(MODULES[key])
    try:
        module.plan(module.parameters({**default_parameters(key), **params}))
    except ParameterError as err:
        raise ParameterError(f"{NOTEBOOKS[key]}: {err}") from None
