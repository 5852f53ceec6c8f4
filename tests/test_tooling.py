"""The testing tools themselves: the example bugs still inject where the code is, every mutated module has its
fast tests, and the equivalent-mutant list names only modules that are mutated."""
import re

import pytest

import run_example_bugs
import run_mutation


@pytest.mark.parametrize("bug", run_example_bugs.BUGS, ids=lambda b: b.name)
def test_each_example_bug_still_applies_once_and_changes_its_module(bug, tmp_path):
    module = tmp_path / bug.module
    module.parent.mkdir(parents=True)
    module.write_text((run_example_bugs.ROOT / bug.module).read_text())
    run_example_bugs.inject(tmp_path, bug)
    assert module.read_text() != (run_example_bugs.ROOT / bug.module).read_text()
    assert all((run_example_bugs.ROOT / t).is_file() for t in bug.tests)


def test_an_edit_that_no_longer_applies_is_refused_naming_the_bug(tmp_path):
    bug = run_example_bugs.BUGS[0]
    (tmp_path / bug.module).parent.mkdir(parents=True)
    (tmp_path / bug.module).write_text("# the code moved on\n")
    with pytest.raises(LookupError, match=f"{bug.name}.*found 0 times.*update BUGS"):
        run_example_bugs.inject(tmp_path, bug)


def test_every_mutated_module_has_its_test_files_and_every_judged_mutant_is_of_a_mutated_module():
    for module in run_mutation.DEFAULT_MODULES:
        assert all((run_mutation.ROOT / t).is_file() for t in run_mutation.tests_for(module))
    mutated = {m.removesuffix(".py").replace("/", ".") for m in run_mutation.DEFAULT_MODULES}
    for name in run_mutation.equivalents():
        assert re.sub(r"\.x.*$", "", name) in mutated, name


def test_under_loadgroup_the_shared_fixture_tests_are_grouped_onto_one_worker(request):
    """``make test`` relies on pytest-xdist's ``--dist loadgroup`` to build the smoke report and the demo stand-in
    once: a pytest release that drops the group suffix (pytest 9.2 did, silently) would build each on every
    worker and wait on the stand-in's lock. Skipped outside ``make test``'s way of running."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not running under pytest-xdist --dist loadgroup")
    grouped = {"smoke_report": [i for i in request.session.items if "smoke_report" in i.fixturenames],
               "demo_standin": [i for i in request.session.items if i.name.startswith("test_demo_sized")]}
    for group, items in grouped.items():
        assert all(i.nodeid.endswith(f"@{group}") for i in items), group
    assert "@" not in request.node.nodeid  # the rest are shared out one by one
