"""Parameter validation: every notebook checks its parameters before any work starts, and a bad one
gets an error that names it and the allowed values."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import ParameterError
from labkit.paths import default_output_dir

__all__ = ["ParameterError", "Spec", "check_profile", "validate", "from_notebook", "validate_runs",
           "unknown_parameters"]

PROFILES = ("demo", "cpu", "full", "smoke")
DATA_SOURCES = ("synthetic", "real")
# What a completed run leaves in data/cache/checkpoints (see labkit.training.checkpoints).
KEEP_CHECKPOINTS = ("final", "none", "all")
# labkit's own offline stand-ins for ImageNet pre-training (labkit.training.standin): the demo's, and a seconds-size one
STANDINS = ("standin", "standin-smoke")
NAMED_WEIGHTS = (*STANDINS, "imagenet", "none")  # any other `weights` value is a state-dict file


def check_profile(profile: str) -> None:
    """Refuse a ``profile`` that is not one of :data:`PROFILES`, in one line that names the allowed ones."""
    if profile not in PROFILES:
        raise ParameterError(f"profile={profile!r} is not allowed; allowed: {', '.join(PROFILES)}")


@dataclass(frozen=True)
class Spec:
    """What a parameter may hold: a type, and optionally choices, bounds or None."""

    kind: type | tuple
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    optional: bool = False  # None allowed
    note: str = ""

    def allowed(self) -> str:
        if self.choices:
            return ", ".join(repr(c) for c in self.choices) + (f" {self.note}" if self.note else "")
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
                 dict: "a mapping"}
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        text = " or ".join(names.get(k, k.__name__) for k in kinds)
        if self.min is not None and self.max is not None:
            text += f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            text += f" >= {self.min}"
        if self.optional:
            text += " or None"
        return text + (f" ({self.note})" if self.note else "")

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter {name!r} is missing (None); allowed: {self.allowed()}")
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ParameterError(f"parameter {name!r} = {value!r} has the wrong type; allowed: {self.allowed()}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {name!r} = {value!r} is not allowed; allowed: {self.allowed()}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ParameterError(f"parameter {name!r} = {value!r} is out of range; allowed: {self.allowed()}")
        return value


def weights_spec() -> Spec:
    return Spec(str, note="'standin', 'standin-smoke', 'imagenet', 'none' or the path of a state-dict file")


COMMON = {
    "profile": Spec(str, PROFILES),
    "data_source": Spec(str, DATA_SOURCES),
    "data_dir": Spec(str, optional=True, note="default: the dataset's folder under data/"),
    "output_dir": Spec(str, optional=True, note="default: reports/<profile>/<notebook>/"),
    "image_size": Spec(int, min=16, max=1024),
    "batch_size": Spec(int, min=1),
    "lr": Spec(float, min=0.0),
    "epochs": Spec(int, min=0),
    "seed": Spec(int, min=0, note="the data split's seed"),
    "seeds": Spec(list, note="training seeds, e.g. [0] or [0, 1, 2]: each run is repeated once per seed"),
    "val_fraction": Spec(float, min=0.0, max=0.99, note="0: no validation split, train on the whole training split"),
    "device": Spec(str, note="'auto', 'cpu', 'cuda', 'cuda:<i>' or 'mps'"),
    "keep_checkpoints": Spec(str, KEEP_CHECKPOINTS, note="(what a completed run keeps: its final weights without "
                                                        "optimizer state, nothing, or every epoch's checkpoint too)"),
}


def validate(params: dict, specs: dict[str, Spec], notebook: str) -> dict:
    """Check ``params`` against the common specs and ``specs``; fill ``output_dir``; return them resolved.

    Unknown names are errors too (a typo in a sweep would otherwise be silently ignored).
    """
    all_specs = {**COMMON, **specs}
    unknown = set(params) - set(all_specs)
    if unknown:
        raise unknown_parameters(unknown, all_specs)
    resolved = {name: spec.check(name, params[name]) for name, spec in all_specs.items() if name in params}
    if "weights" in resolved:
        w = resolved["weights"]
        if w not in NAMED_WEIGHTS and not Path(w).expanduser().is_file():
            raise ParameterError(f"parameter 'weights' = {w!r} is not allowed; allowed: {weights_spec().allowed()}")
    if "profile" in resolved and not resolved.get("output_dir"):
        resolved["output_dir"] = str(default_output_dir(resolved["profile"], notebook))
    return resolved


def unknown_parameters(unknown, allowed, where: str = "") -> ParameterError:
    """The one error for names a notebook does not declare, whoever injected them (the report, a sweep,
    plain papermill or a line typed into the parameters cell)."""
    return ParameterError(f"{where}unknown parameter(s) {', '.join(map(repr, sorted(unknown)))}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def from_notebook(namespace: dict, specs: dict[str, Spec], notebook: str) -> dict:
    """A notebook's parameters, read from its namespace and validated (:func:`validate`).

    Names assigned in the parameters cell, or in the cell papermill injects after it, that the notebook
    does not declare are refused here, in the notebook's first cell: plain papermill only warns about
    them, and the notebook would otherwise run with the defaults and say nothing.
    """
    declared = {**COMMON, **specs}
    values = {name: namespace[name] for name in declared if name in namespace}
    values.update({name: namespace.get(name) for name in _assigned_in_parameter_cells(namespace)})
    return validate(values, specs, notebook)


def _assigned_in_parameter_cells(namespace: dict) -> set[str]:
    """The names assigned by the cells run just before this one, back to the parameters cell: IPython keeps
    every executed cell's source in ``In``. Only cells made of plain assignments count, so an ordinary
    code cell run in between is never taken for parameters. Empty outside IPython."""
    import ast
    sources = namespace.get("In")
    names: set[str] = set()
    if not isinstance(sources, list):
        return names
    for source in reversed(sources[:-1]):
        try:
            body = ast.parse(source).body
        except SyntaxError:
            break
        targets = []
        for stmt in body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                targets.append(stmt.target.id)
            elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
                targets += [t.id for t in stmt.targets]
            elif not isinstance(stmt, (ast.Import, ast.ImportFrom)) and not (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                return names  # an ordinary code cell: the parameter cells end here
        if not body:
            continue
        names.update(targets)
        if any(isinstance(stmt, ast.AnnAssign) for stmt in body):
            break  # the annotated parameters cell is the first of them
    return names


def validate_runs(runs: list, specs: dict[str, Spec], name: str = "runs") -> list[dict]:
    """Validate a list of run dicts (each with a unique ``name``) against ``specs``; an empty list is allowed."""
    if not isinstance(runs, list):
        raise ParameterError(f"parameter {name!r} must be a list of runs (dicts with a 'name'; [] skips them)")
    seen, out = set(), []
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("name"), str):
            raise ParameterError(f"{name}[{i}] = {run!r} must be a dict with a string 'name'")
        if run["name"] in seen:
            raise ParameterError(f"{name}[{i}]: the name {run['name']!r} is used twice; run names must be unique")
        seen.add(run["name"])
        unknown = sorted(set(run) - set(specs) - {"name"})
        if unknown:
            raise ParameterError(f"{name}[{i}] ({run['name']}): unknown key(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: name, {', '.join(sorted(specs))}")
        out.append({"name": run["name"], **{k: specs[k].check(f"{name}[{i}].{k}", v) for k, v in run.items()
                                            if k != "name"}})
    return out
