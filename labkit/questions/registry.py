"""The registry: one row per question (its key, notebook and module), the notebooks' parameters (the
parameters cell's defaults and each profile's file), and the pre-flight that checks a notebook's parameters
before anything runs. The report, the sweeps, the forecast and the device check ask it, and through it the
question itself (:class:`labkit.questions.contract.Question`)."""
from __future__ import annotations

import ast
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from labkit.errors import MissingFileError
from labkit.params import PROFILES, ParameterError, unknown_parameters
from labkit.paths import project_root


@dataclass(frozen=True)
class Entry:
    """One question: its key (``q1``), its notebook and the module that does its work (None for a notebook
    without one, whose parameters are then checked by name only)."""

    key: str
    notebook: str
    module: str | None


QUESTIONS = {entry.key: entry for entry in (
    Entry("q1", "q1_stl10_transfer.ipynb", "labkit.questions.q1_transfer"),
    Entry("q2", "q2_tinyimagenet_losses.ipynb", "labkit.questions.q2_losses"),
    Entry("q3", "q3_dogs_vs_cats_optimizers.ipynb", "labkit.questions.q3_optimizers"),
)}
NOTEBOOKS = {key: entry.notebook for key, entry in QUESTIONS.items()}  # a view of the rows, for lookups


def question(key: str):
    """The question's module, which satisfies :class:`labkit.questions.contract.Question`."""
    return importlib.import_module(QUESTIONS[key].module)


def title(key: str, params: dict | None = None) -> str:
    """"Q1 · STL-10 transfer learning (ResNet-18)": the architecture is the one these parameters train
    (the notebook's defaults when none are given)."""
    if QUESTIONS[key].module is None:
        return QUESTIONS[key].notebook
    module = question(key)
    P = {**default_parameters(key), **(params or {})}
    return f"{key.upper()} · {module.TITLE} ({module.architecture(P)})"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def available() -> list[str]:
    return [k for k, name in NOTEBOOKS.items() if (notebooks_dir() / name).exists()]


def load_params(profile: str, key: str) -> dict:
    """The flat parameter file ``notebooks/params/<profile>/<key>.yaml`` (as ``papermill -f`` reads it)."""
    path = notebooks_dir() / "params" / profile / f"{key}.yaml"
    if not path.is_file():
        raise MissingFileError(f"no parameter file {path}; profiles: {', '.join(PROFILES)}")
    return yaml.safe_load(path.read_text()) or {}


def parameters_cell(notebook: Path) -> str:
    cells = json.loads(Path(notebook).read_text())["cells"]
    return next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))


def cell_defaults(source: str) -> dict:
    """The values a parameters cell assigns, read as literals (the cell is never executed)."""
    values = {}
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            values[stmt.target.id] = ast.literal_eval(stmt.value)
        elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            for target in stmt.targets:
                values[target.id] = ast.literal_eval(stmt.value)
    return values


def default_parameters(key: str, profile: str | None = None) -> dict:
    """A notebook's parameters as it would run them: its parameters cell (the demo values), with the
    profile's file over them. Lets code outside a kernel (tests, benchmarks, the device check) call the
    question modules with exactly the notebook's settings."""
    values = cell_defaults(parameters_cell(notebooks_dir() / NOTEBOOKS[key]))
    if profile is not None:
        values.update(load_params(profile, key))
    return values


def resolved_parameters(key: str, profile: str | None = None, **overrides) -> dict:
    """The question's parameters, validated, as its notebook would resolve them: the parameters cell, the profile's
    file over it, ``overrides`` over both. What code outside a kernel passes to the question's functions."""
    return question(key).parameters({**default_parameters(key, profile), **overrides})


def check_names(notebook: Path, params: dict) -> None:
    """Refuse parameters the notebook does not declare, before anything runs (papermill only warns)."""
    declared = set(cell_defaults(parameters_cell(notebook)))
    unknown = set(params) - declared
    if unknown:
        raise unknown_parameters(unknown, declared, f"{Path(notebook).name}: ")


def validate(key: str, params: dict) -> dict:
    """Check a notebook's parameters as its first cell will (names, values, every run list), so that
    ``make report`` or a sweep stops before anything runs instead of failing in a later notebook or point.
    Returns them resolved; raises :class:`labkit.params.ParameterError` naming the notebook."""
    check_names(notebooks_dir() / NOTEBOOKS[key], params)
    if QUESTIONS[key].module is None:
        return params
    module = question(key)
    try:
        P = module.parameters({**default_parameters(key), **params})
        module.plan(P)
    except ParameterError as err:
        raise ParameterError(f"{NOTEBOOKS[key]}: {err}") from None
    return P


# What never counts as a reduction: where things go, how they run, which machine.
NOT_REDUCTIONS = {"profile", "output_dir", "data_dir", "device", "keep_checkpoints", "precision", "embedding_method",
                  "embedding_classes"}


def reductions(key: str, P: dict) -> list[str]:
    """What these parameters change against the full profile (the original's setting), one phrase each, e.g.
    "image_size 64 (full: 224)" or "ce: epochs 2 (full: 12)"; [] for the full profile itself or synthetic data
    (whose pages say so already)."""
    if P.get("profile") == "full" or P.get("data_source") != "real":
        return []
    full = resolved_parameters(key, "full")
    out = []
    for name, value in P.items():
        if name in NOT_REDUCTIONS or name not in full or value == full[name]:
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):  # a list of runs: compare by name
            theirs, runs_by_change = {r.get("name"): r for r in full[name]}, {}
            for run in value:
                other = theirs.get(run.get("name"), {})
                changed = ", ".join(f"{k} {v} (full: {other[k]})" for k, v in run.items()
                                    if k in other and other[k] != v)
                if changed:
                    runs_by_change.setdefault(changed, []).append(run["name"])
            out += [f"{', '.join(names)}: {changed}" for changed, names in runs_by_change.items()]
        else:
            out.append(f"{name} {_shown(value)} (full: {_shown(full[name])})")
    return out


def _shown(value) -> str:
    return "all" if value is None else str(value)
