# labkit: `make report` and `make test` are all anyone needs to type; both set up first.
PROFILE ?= demo
ONLY ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.labkit-setup

.PHONY: setup test report plan lab data bench bench-gpu check-device sweep compare clean system-deps mutation example-bugs

setup: $(STAMP)

# Re-runs only when the dependency list changes; a second `make setup` is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Debian's chromium renders the PDF report headless (no browser download); installed where we are root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; the PDF step will say how to get it"; \
	  else echo "note: chromium is not installed (sudo apt-get install chromium); HTML only, no PDF"; fi; }

# Tests run on every core (pytest-xdist; TEST_JOBS=1 for one process); the tests that share the smoke report or
# the demo stand-in stay on one worker (--dist loadgroup), so each is built once.
TEST_JOBS ?= auto
test: setup system-deps
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadgroup

# Mutation testing (mutmut; slow, so not part of `make test`): each module is mutated against its own fast
# tests (labkit/a/b.py -> tests/a/test_b.py, plus the files tests/run_mutation.py names in MORE_TESTS; tests
# marked slow left out); tests/MUTATION.md lists the surviving mutants judged equivalent. Work folders:
# .mutation/<module>/ (git-ignored). Without MODULES: every module the script lists (DEFAULT_MODULES). E.g.
#   make mutation MODULES="labkit/metrics.py labkit/runs.py" MUTATION_JOBS=2
MODULES ?=
MUTATION_JOBS ?= 1
mutation: setup
	$(PY) tests/run_mutation.py --jobs $(MUTATION_JOBS) $(MODULES)

# The realistic wiring bugs that once survived the suite, injected one at a time into a throwaway copy: each
# must make its mirroring test file fail within a minute (tests/run_example_bugs.py; about a minute).
example-bugs: setup
	$(PY) tests/run_example_bugs.py

# SET="weights=none" overrides a parameter in every notebook that declares it (several: SET="a=1 b=2");
# YES=1 starts without asking when the forecast exceeds an hour.
SET ?=
SET_ARGS = $(foreach s,$(SET),--set $(s))
report: setup system-deps
	$(PY) -m labkit report --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(TIMEOUT),--timeout $(TIMEOUT)) \
	  $(SET_ARGS) $(if $(YES),--yes)

# The forecast alone: runs x seeds, data, disk and wall time per notebook on this machine (ARGS=--json: one object).
plan: setup
	$(PY) -m labkit plan --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(SET_ARGS) $(ARGS)

# JupyterLab refuses to start as root (Docker containers, cloud VMs) unless told --allow-root: given there only.
# jupyter_config/ holds the project's JupyterLab defaults (no news pop-up over the notebooks); the user's own
# settings in ~/.jupyter still win. LAB_ARGS go to JupyterLab as they are, e.g. for another machine:
#   make lab LAB_ARGS="--ip 0.0.0.0 --port 8890"
LAB_ARGS ?=
LAB_AS_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	cd notebooks && JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter_config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  ../$(VENV)/bin/jupyter lab $(LAB_AS_ROOT) $(LAB_ARGS)

DATASETS ?= stl10,tiny-imagenet-200,dogs-vs-cats
data: setup
	$(PY) -m labkit data --datasets $(DATASETS)

bench: setup
	$(PY) -m labkit bench

# The GPU targets run from the checkout with whatever python3 the machine has (no setup, no venv, no
# network): a lent GPU machine has torch and friends but no notebook stack. Wheels in .whl/ (git-ignored;
# the README says how to fetch pytorch-metric-learning's) are installed into a temporary folder first.
WITH_WHEELS = site=""; if ls .whl/*.whl >/dev/null 2>&1; then site=$$(mktemp -d); \
	  $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --target "$$site" .whl/*.whl 2>/dev/null \
	    || for w in .whl/*.whl; do $(PYTHON) -m zipfile -e "$$w" "$$site" || exit 1; done; fi; \
	PYTHONPATH=".$${site:+:$$site}" PYTHONUNBUFFERED=1

bench-gpu:
	@$(WITH_WHEELS) $(PYTHON) -m labkit bench --gpu; rc=$$?; rm -rf "$$site"; exit $$rc

check-device:
	@$(WITH_WHEELS) $(PYTHON) -m labkit check-device; rc=$$?; rm -rf "$$site"; exit $$rc

# make sweep NB=q3 ARGS="-p lr 1e-3 1e-4 --seeds 2 --jobs 2"   (a local Dask cluster)
# DASK_SCHEDULER_ADDRESS=tcp://head:8786 make sweep NB=q3 ARGS="-p lr 1e-3 1e-4"   (an existing one)
sweep: setup
	$(PY) -m labkit sweep $(NB) --profile $(PROFILE) $(ARGS)

# make compare A=reports/demo B=/tmp/other/reports/demo [OUT=folder] [ARGS="--fail-on-change"]
compare: setup
	$(PY) -m labkit compare "$(A)" "$(B)" --out "$(or $(OUT),.)" $(ARGS)

# The big hammer: everything labkit generated. `python -m labkit cache --prune` removes old checkpoints only.
clean:
	find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf data/cache data/synthetic .pytest_cache
	@kept=""; for d in data/*/; do [ -d "$$d" ] && kept="$$kept $$d"; done; \
	echo "removed: reports/, data/cache/ (checkpoints, features, decoded datasets, stand-in weights), data/synthetic/"; \
	echo "kept: downloaded datasets:$${kept:- none}; ImageNet weights in torch's cache ($${TORCH_HOME:-~/.cache/torch}); .venv"
