"""House rules of the repository itself."""
import json
import tomllib

import yaml

from conftest import ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    declared = {d for d in pip_section if d != "-e ."}
    assert declared == wanted, f"only in environment.yml: {declared - wanted}; only in pyproject: {wanted - declared}"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.removeprefix("python") == project["requires-python"]


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs"
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path.name


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _labkit_imports() -> dict[str, set[str]]:
    """Module -> the labkit modules it imports, at the top or inside functions (``ast``, nothing executed)."""
    import ast
    package = ROOT / "labkit"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_labkit_has_no_import_circle():
    graph = _labkit_imports()
    # a package's __init__ re-exporting its own submodules is not a circle through the package
    graph = {m: {d for d in deps if not (m.startswith(d + ".") and d in graph)} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if not state.get(dep):
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


# labkit's layers, lowest first. A module imports modules of its own layer or lower ones, never higher: the ground
# floor knows nothing of data, the training loop nothing of the questions, the questions nothing of the report.
LAYERS = [
    ("ground", ["labkit", "labkit.errors", "labkit.paths", "labkit.params", "labkit.device", "labkit.progress",
                "labkit.metrics"]),
    ("data", ["labkit.data*"]),
    ("training", ["labkit.training*"]),
    ("models", ["labkit.models"]),
    ("records", ["labkit.runs", "labkit.results", "labkit.text", "labkit.plots"]),
    ("questions", ["labkit.questions*"]),
    ("report and sweeps", ["labkit.report*", "labkit.sweep*", "labkit.cache"]),
    ("bench", ["labkit.bench*"]),
    ("command line", ["labkit.cli", "labkit.__main__"]),
]


def _layer(module: str) -> int:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(module == p or (p.endswith("*") and (module == p[:-1] or module.startswith(p[:-1] + ".")))
               for p in patterns):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _steps() -> dict[str, set[str]]:
    """The import graph without edges to a package's ``__init__`` that holds only a docstring or re-exports
    (importing ``labkit.questions.registry`` names the package ``labkit.questions``: not a step of its own)."""
    graph = _labkit_imports()
    return {m: {d for d in deps if not (d in graph and (d == "labkit" or m.startswith(d + ".") or
                                                        any(x.startswith(d + ".") for x in deps)))}
            for m, deps in graph.items()}


def test_nothing_imports_upward():
    upward = sorted(f"{m} ({LAYERS[_layer(m)][0]}) -> {d} ({LAYERS[_layer(d)][0]})"
                    for m, deps in _steps().items() for d in deps if _layer(d) > _layer(m))
    assert not upward, upward


def test_the_longest_import_chain_is_at_most_12_modules(capsys):
    graph = _steps()
    longest: dict[str, list[str]] = {}

    def chain(module: str) -> list[str]:
        if module not in longest:
            longest[module] = [module] + max((chain(d) for d in sorted(graph[module])), key=len, default=[])
        return longest[module]

    worst = max((chain(m) for m in sorted(graph)), key=len)
    with capsys.disabled():
        print(f"\nlongest chain of labkit imports ({len(worst)} modules): {' -> '.join(worst)}")
    assert len(worst) <= 12, worst


def test_at_most_15_modules_directly_in_the_package():
    top = sorted(p.name for p in (ROOT / "labkit").glob("*.py"))
    assert len(top) <= 15, top


def test_the_circle_check_finds_a_circle(tmp_path, monkeypatch):
    import pytest
    monkeypatch.setattr("test_project._labkit_imports", lambda: {"labkit.a": {"labkit.b"}, "labkit.b": {"labkit.a"}})
    with pytest.raises(AssertionError, match="labkit.a -> labkit.b -> labkit.a"):
        test_labkit_has_no_import_circle()


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "labkit").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these by concern: {long}"


def test_every_module_has_its_test_file():
    """Tests mirror the package: ``labkit/<folder>/<module>.py`` has ``tests/<folder>/test_<module>.py`` and a
    ground-floor module ``tests/test_<module>.py``. The data loaders, generators and cache share
    ``tests/data/test_data.py``; the sweep engine's modules are tested together, end to end through real Dask."""
    modules = {p.relative_to(ROOT / "labkit").with_suffix("") for p in (ROOT / "labkit").rglob("*.py")
               if p.stem not in ("__init__", "__main__")}
    shared = {"data/core": "data/test_data.py", "data/loaders": "data/test_data.py",
              "data/synthetic": "data/test_data.py", "sweep/cluster": "sweep/test_engine.py",
              "sweep/point": "sweep/test_engine.py", "sweep/tables": "sweep/test_engine.py"}
    expected = {m: shared.get(m.as_posix()) or (m.parent / f"test_{m.name}.py").as_posix() for m in modules}
    missing = sorted(f"{m} (tests/{test})" for m, test in expected.items() if not (ROOT / "tests" / test).exists())
    assert not missing, f"no test file for: {missing}"


def test_no_file_points_at_files_a_user_does_not_have():
    import re
    pattern = re.compile(r"SEED\.md|DESIGN\.md|\.\./shared")
    tracked = [p for p in ROOT.rglob("*") if p.is_file() and not any(
        part in (".git", ".venv", "data", "reports", "__pycache__", ".pytest_cache") or part.endswith(".egg-info")
        for part in p.relative_to(ROOT).parts)]
    hits = [str(p.relative_to(ROOT)) for p in tracked
            if p.suffix in (".py", ".md", ".yaml", ".yml", ".ipynb", ".toml", "") and p.name != "conftest.py"
            and pattern.search(p.read_text(errors="ignore"))]
    assert not hits, hits


def test_every_notebook_code_cell_is_valid_python():
    """A syntax error in a later cell would only show after minutes of training; catch it in milliseconds."""
    import ast
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                ast.parse("".join(cell["source"]), filename=f"{path.name} cell {i}")


def _code_cells() -> list[tuple[str, int, str]]:
    """(notebook, index, source) of every code cell but the parameters cells."""
    out = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code" and "parameters" not in cell.get("metadata", {}).get("tags", []):
                out.append((path.name, i, "".join(cell["source"])))
    return out


def test_notebook_cells_read_like_a_report():
    """A cell is a few lines calling the package: at most 15 non-blank lines, no lambda or def (code lives in
    labkit), and no run of 6 lines repeated across cells (a repeated block belongs in a function)."""
    import ast
    long = [(nb, i, n) for nb, i, src in _code_cells() if (n := sum(bool(l.strip()) for l in src.splitlines())) > 15]
    assert not long, long
    defined = [(nb, i) for nb, i, src in _code_cells() for node in ast.walk(ast.parse(src))
               if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not defined, defined
    seen: dict[tuple, tuple] = {}
    repeated = []
    for nb, i, src in _code_cells():
        lines = [l.strip() for l in src.splitlines() if l.strip()]
        for k in range(len(lines) - 5):
            block = tuple(lines[k:k + 6])
            if block in seen and seen[block][:2] != (nb, i):
                repeated.append((seen[block], (nb, i)))
            seen.setdefault(block, (nb, i))
    assert not repeated, repeated


def test_the_cell_checks_find_what_they_look_for(monkeypatch):
    import pytest
    bad = [("x.ipynb", 1, "f = lambda v: v\n"), ("x.ipynb", 2, "\n".join(f"a{i} = {i}" for i in range(16)))]
    monkeypatch.setattr("test_project._code_cells", lambda: bad)
    with pytest.raises(AssertionError, match="x.ipynb"):
        test_notebook_cells_read_like_a_report()
    block = "\n".join(f"b{i} = {i}" for i in range(6))
    monkeypatch.setattr("test_project._code_cells", lambda: [("x.ipynb", 1, block), ("y.ipynb", 3, block)])
    with pytest.raises(AssertionError, match="y.ipynb"):
        test_notebook_cells_read_like_a_report()
