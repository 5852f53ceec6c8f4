"""``python -m labkit``: an expected error is one line on stderr and a non-zero exit, no traceback;
``--debug`` shows it. Run as users run it (a subprocess) where that is cheap, in-process otherwise."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import zip_bytes
from labkit import cli
from labkit.data import download as dl
from labkit.progress import PLAIN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens on the discard port: every request is refused


def labkit_cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_ROOT": str(root), **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def one_error_line(stderr: str) -> str:
    """The one error line, after the progress lines (in a log) of the downloads that went before it."""
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith(PLAIN_PREFIX)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("labkit: error: ") and lines[0].endswith("(--debug shows the traceback)")
    return lines[0]


def test_bad_profile_is_one_line_without_a_traceback(tmp_path):
    done = labkit_cli(tmp_path, "report", "--profile", "nope")
    assert done.returncode == 1
    assert "profile='nope' is not allowed; allowed: demo, cpu, full, smoke" in one_error_line(done.stderr)


@pytest.mark.parametrize("command", [["report"], ["plan"], ["sweep", "q3", "-p", "lr", "0.1"]],
                         ids=["report", "plan", "sweep"])
def test_a_mistyped_profile_is_refused_before_torch_is_imported(tmp_path, command):
    """The answer comes at once, not after the seconds that torch, papermill and the notebooks' stack take."""
    code = (f"import sys; from labkit import cli; code = cli.main({command + ['--profile', 'nope']!r}); "
            "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LABKIT_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert done.stdout.split() == ["1", "False"], done.stderr
    assert "profile='nope' is not allowed; allowed: demo, cpu, full, smoke" in one_error_line(done.stderr)


@pytest.mark.parametrize("args", [["--debug", "report", "--profile", "nope"],
                                  ["report", "--profile", "nope", "--debug"]], ids=["before", "after"])
def test_debug_shows_the_traceback(tmp_path, args):
    done = labkit_cli(tmp_path, *args)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "labkit.errors.ParameterError: profile='nope' is not allowed" in done.stderr


def test_data_without_network(tmp_path):
    """Today's `make data` offline: every request goes to a proxy that refuses it (no real host is
    contacted, with or without a network)."""
    proxies = {name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    done = labkit_cli(tmp_path, "data", "--datasets", "stl10", "--no-weights",
                      env={**proxies, "no_proxy": "", "NO_PROXY": ""})
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert dl.SOURCES["stl10"].url in line
    assert f"put the file at {tmp_path / 'data' / 'stl10' / 'stl10_binary.tar.gz'} by hand" in line


# ----------------------------------------------------------------------------- in-process

def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only a user's errors become one line: anything else (here a ValueError that is no LabkitError) is raised."""
    monkeypatch.setattr(cli, "cache", lambda parser, args: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["cache"])


def _serve_file(monkeypatch, tmp_path, data: bytes, checksum: str) -> None:
    """Point the Tiny ImageNet source at a local file (urllib reads file:// URLs like any other)."""
    archive = tmp_path / "served" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    archive.write_bytes(data)
    monkeypatch.setitem(dl.SOURCES, "tiny-imagenet-200", dl.Source(archive.as_uri(), checksum, "tiny-imagenet-200"))



def test_checksum_mismatch(isolated_root, monkeypatch, capsys):
    _serve_file(monkeypatch, isolated_root, b"not the archive", "md5:" + "0" * 32)
    assert cli.main(["data", "--datasets", "tiny-imagenet-200", "--no-weights"]) == 1
    assert "md5 is" in one_error_line(capsys.readouterr().err)
    with pytest.raises(dl.ChecksumError):
        cli.main(["--debug", "data", "--datasets", "tiny-imagenet-200", "--no-weights"])


def test_unsafe_archive(isolated_root, monkeypatch, capsys):
    evil = zip_bytes({"tiny-imagenet-200/wnids.txt": "n01\n", "../../escaped.txt": "x"})
    _serve_file(monkeypatch, isolated_root, evil, "md5:" + hashlib.md5(evil).hexdigest())
    assert cli.main(["data", "--datasets", "tiny-imagenet-200", "--no-weights"]) == 1
    assert "'../../escaped.txt' would be written outside" in one_error_line(capsys.readouterr().err)
    assert not list(isolated_root.rglob("escaped.txt"))


def test_unknown_dataset(isolated_root, capsys):
    assert cli.main(["data", "--datasets", "stl10,imagenet", "--no-weights"]) == 1
    assert "unknown dataset(s) 'imagenet'; allowed: stl10," in one_error_line(capsys.readouterr().err)
    assert not (isolated_root / "data" / "stl10").exists()  # refused before stl10 was fetched


def test_generate_real_size_writes_keeps_and_refuses_real_data(isolated_root, monkeypatch, capsys):
    """``data --generate-real-size`` (at tiny counts here): generated sets where the real ones go, the bytes
    written; a second run keeps them; a folder of real data is refused in one line and left as it was."""
    from labkit.data import real_size
    monkeypatch.setitem(real_size.REAL_COUNTS, "stl10", {"train_per_class": 1, "test_per_class": 1})
    monkeypatch.setitem(real_size.REAL_COUNTS, "dogs-vs-cats", {"per_class": 2})
    argv = ["data", "--generate-real-size", "--datasets", "stl10,dogs-vs-cats"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"stl10: generated in {isolated_root / 'data' / 'stl10'} in " in out and "dogs-vs-cats: generated" in out
    assert "written: " in out and (isolated_root / "data" / "dogs-vs-cats" / "GENERATED.json").is_file()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "already holds a complete generated set of this generator; kept" in out and "written: 0 bytes" in out
    real = isolated_root / "elsewhere" / "stl10"
    real.mkdir(parents=True)
    (real / "stl10_binary.tar.gz.part").write_bytes(b"a download")
    assert cli.main(argv[:-1] + ["stl10", "--data-root", str(real.parent)]) == 1
    assert "holds files and no GENERATED.json" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in real.iterdir()] == ["stl10_binary.tar.gz.part"]


def test_unknown_notebook(isolated_root, capsys):
    assert cli.main(["report", "--profile", "smoke", "--only", "q9"]) == 1
    assert "unknown notebook(s) q9" in one_error_line(capsys.readouterr().err)


def test_missing_parameter_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))  # a root of its own: isolated_root links the real notebooks/
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "q3_dogs_vs_cats_optimizers.ipynb").write_text("{}")
    assert cli.main(["report", "--profile", "smoke", "--only", "q3"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"no parameter file {notebooks / 'params' / 'smoke' / 'q3.yaml'}" in line


def test_an_unexpected_error_keeps_its_traceback(isolated_root, monkeypatch):
    """A bug is not an expected error: it propagates (Python prints the traceback) even without --debug."""
    def broken(name, root=None):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(dl, "fetch_dataset", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["data", "--datasets", "stl10", "--no-weights"])


def test_interrupt_is_one_line(isolated_root, monkeypatch, capsys):
    def interrupted(name, root=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(dl, "fetch_dataset", interrupted)
    assert cli.main(["data", "--datasets", "stl10", "--no-weights"]) == 130
    assert capsys.readouterr().err.strip() == "labkit: interrupted; run the command again to resume"


# ----------------------------------------------------------------------------- every subcommand

COMMANDS = {"data": ["--datasets", "--no-weights", "--generate-real-size", "--data-root"],
            "bench": ["--repeats", "--only", "--json", "--gpu"], "check-device": [],
            "report": ["--profile", "--only", "--timeout", "--out", "--set", "--yes"],
            "plan": ["--profile", "--only", "--set", "--json"],
            "sweep": ["notebook", "--param", "--seeds", "--jobs", "--scheduler", "--profile", "--timeout", "--out"],
            "compare": ["--out", "--json", "--fail-on-change", "--fail-on-significant"],
            "cache": ["--prune", "--older-than", "--notebook", "--dry-run"]}


def _exit_code(argv) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    return exited.value.code


def test_the_commands_are_the_ones_tested_here(capsys):
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert " ".join(out.split()).startswith("usage: labkit [-h] [--debug] {" + ",".join(COMMANDS) + "} ...")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    assert _exit_code([command, "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: labkit {command} [-h] [--debug]") and not captured.err
    for option in COMMANDS[command] + ["--debug"]:
        assert f"  {option}" in captured.out or f", {option}" in captured.out, option  # in the options list


def usage_then_one_error(stderr: str, parser: str) -> str:
    """argparse's refusal: the usage, then one line naming the bad argument; no traceback."""
    lines = stderr.rstrip("\n").splitlines()
    assert "Traceback" not in stderr and lines[0].startswith(f"usage: {parser} [-h] [--debug]"), stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), stderr  # usage continuation lines only
    assert lines[-1].startswith(f"{parser}: error: "), stderr
    return lines[-1]


# argparse reports unrecognized arguments and the CLI's own parser.error through the top-level parser
@pytest.mark.parametrize("argv, parser, message", [
    (["nope"], "labkit", "argument command: invalid choice: 'nope'"),
    (["data", "--datasets=stl10", "--bogus"], "labkit", "unrecognized arguments: --bogus"),
    (["bench", "--repeats", "two"], "labkit bench", "argument --repeats: invalid int value: 'two'"),
    (["report", "--timeout", "soon"], "labkit report", "argument --timeout: invalid int value: 'soon'"),
    (["sweep", "q3", "-p", "lr"], "labkit", "-p lr: give a parameter name and at least one value"),
    (["sweep", "q3", "--seeds", "x"], "labkit sweep", "argument --seeds: invalid int value: 'x'"),
    (["cache", "--notebook", "q2"], "labkit", "--older-than, --notebook and --dry-run go with --prune"),
], ids=["command", "data", "bench", "report", "sweep-grid", "sweep-seeds", "cache-without-prune"])
def test_a_malformed_argument_is_refused_by_name(argv, parser, message, isolated_root, capsys):
    assert _exit_code(argv) == 2
    assert message in usage_then_one_error(capsys.readouterr().err, parser)
    assert not (isolated_root / "reports").exists()


@pytest.mark.parametrize("argv, message", [
    (["data", "--datasets", "stl-10", "--no-weights"], "unknown dataset(s) 'stl-10'; allowed: stl10, "),
    (["bench", "--repeats", "0"], "--repeats=0 is not allowed; allowed: an integer >= 1"),
    (["report", "--profile", "quick"], "profile='quick' is not allowed; allowed: demo, cpu, full, smoke"),
    (["sweep", "q4", "-p", "lr", "1e-3"], "unknown notebook 'q4'; allowed: q1, q2, q3"),
    (["cache", "--prune", "--older-than", "soon"], "--older-than='soon' is not allowed; allowed: a number and a unit"),
    (["cache", "--prune", "--notebook", "q4"], "--notebook='q4' is not allowed; allowed: q1, q2, q3"),
], ids=["data", "bench", "report", "sweep", "cache-age", "cache-notebook"])
def test_a_bad_value_is_one_line_and_exit_1(argv, message, isolated_root, capsys):
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert message in one_error_line(captured.err) and not captured.out
    assert not (isolated_root / "reports").exists() and not (isolated_root / "data" / "stl10").exists()


def test_plan_json_prints_one_object_and_progress_on_stderr(isolated_root, capsys):
    import json
    assert cli.main(["plan", "--profile", "smoke", "--only", "q3", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # the whole of stdout is one object
    assert result["low_seconds"] <= result["total_seconds"] <= result["high_seconds"]
    assert list(result["notebooks"]) == ["q3"] and result["notebooks"]["q3"]["seeds"] == 2
    assert "plan: measuring smallcnn" in err
    assert cli.main(["plan", "--profile", "smoke", "--only", "q3"]) == 0
    out, err = capsys.readouterr()
    assert "measuring" not in err and out.startswith("forecast for profile smoke")  # the rates were cached


def test_set_reads_values_as_yaml_and_refuses_a_pair_without_a_name():
    assert cli.overrides(["weights=none", "seeds=[0, 1]", "lr=0.001"]) == {"weights": "none", "seeds": [0, 1], "lr": 0.001}
    with pytest.raises(cli.ParameterError, match="expected NAME=VALUE"):
        cli.overrides(["weights"])
