"""One contract for the three questions: every method of each question called at smoke size, with the shapes the
report, the sweeps, the forecast and the device check rely on."""
import inspect

import pandas as pd
import pytest
import torch

from labkit.data import ImageSet
from labkit.questions import registry
from labkit.questions.contract import Data, Pass, Question, Setting
from labkit.questions.experiments import Outcome, Runner, summarize
from labkit.runs import Run

SIGNATURES = {"parameters": ["namespace"], "architecture": ["P"], "load_data": ["P"], "plan": ["P"],
              "train_and_test": ["run", "data", "device", "keep_checkpoints"], "findings": ["summary", "parts", "P"],
              "passes": ["P", "sizes"]}


@pytest.mark.parametrize("key", registry.QUESTIONS)
def test_each_question_has_exactly_the_contracts_methods(key):
    module = registry.question(key)
    assert isinstance(module, Question) and isinstance(module.TITLE, str)
    for name, params in SIGNATURES.items():
        assert list(inspect.signature(getattr(module, name)).parameters) == params, (key, name)


@pytest.mark.parametrize("key", registry.QUESTIONS)
def test_every_method_at_smoke_size(key, isolated_root):
    module = registry.question(key)
    P = registry.resolved_parameters(key, "smoke", seeds=[0])
    assert module.architecture(P) in ("ResNet-18", "ResNet-50", "small CNN")
    data = module.load_data(P)
    assert isinstance(data, Data) and all(isinstance(getattr(data, s), ImageSet) for s in ("train", "val", "test"))
    assert len(data.train) and len(data.test) and data.key and data.source
    counts = data.counts()
    assert counts.to_numpy().sum() == len(data.train) + len(data.val) + len(data.test)
    plan = module.plan(P)
    assert plan and all(isinstance(part, dict) for part in plan.values())
    runs = {name: per_seed for part in plan.values() for name, per_seed in part.items()}
    assert runs and all(isinstance(r, Run) for per_seed in runs.values() for r in per_seed)
    part, name = next((p, n) for p, runs_ in plan.items() for n in runs_)  # the first run of the first part
    outcome = module.train_and_test(plan[part][name][0], data, torch.device("cpu"))
    assert isinstance(outcome, Outcome) and len(outcome.y_pred) == len(data.test) and outcome.accuracy is not None
    parts = {p: ({name: Runner(module, data, torch.device("cpu"))({name: plan[part][name]})[name]}
                 if p == part else {}) for p in plan}
    summary = summarize({name: parts[part][name]}, key)
    assert isinstance(summary, pd.DataFrame) and isinstance(module.findings(summary, parts, P), str)
    passes = module.passes(P)
    assert passes and all(isinstance(p, Pass) and isinstance(p.setting, Setting) and p.images > 0 for p in passes)
    assert {p.notebook for p in passes} == {key}


def _papermill(root, key: str, params: dict, out):
    """Plain papermill, as a user would call it, on the smoke profile in a throwaway root."""
    import papermill
    import yaml
    nb = root / "notebooks" / registry.NOTEBOOKS[key]
    smoke = yaml.safe_load((root / "notebooks" / "params" / "smoke" / f"{key}.yaml").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_ROOT", str(root))
        papermill.execute_notebook(str(nb), str(out / "nb.ipynb"), parameters={**smoke, "output_dir": str(out),
                                                                               **params},
                                   cwd=str(nb.parent), progress_bar=False, execution_timeout=300)


@pytest.mark.parametrize("key, params, run, expected", [
    ("q2", {"optimizer": "sgd", "momentum": 0.9, "runs": [{"name": "ce", "loss": "ce"}]}, "ce",
     {"optimizer": "sgd", "momentum": 0.9, "betas": None}),
    ("q1", {"runs": [{"name": "finetune", "optimizer": "sgd", "momentum": 0.0}]}, "finetune",
     {"optimizer": "sgd", "momentum": None}),  # SGD's own default, spelled out: the same run as null
    ("q1", {"optimizer": "adam", "betas": [0.5, 0.999], "runs": [{"name": "finetune"}]}, "finetune",
     {"optimizer": "adam", "betas": [0.5, 0.999], "momentum": None}),
], ids=["q2-sgd-momentum", "q1-sgd-no-momentum", "q1-adam-betas"])
def test_every_notebook_takes_the_optimizer_rule_from_plain_papermill(isolated_root, tmp_path, key, params, run,
                                                                        expected):
    import json
    _papermill(isolated_root, key, params, tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["runs"][run]["status"] in ("ok", "at_chance", "below_chance")
    assert {k: m["run_settings"][run][k] for k in expected} == expected


def test_momentum_on_an_adam_run_is_refused_before_any_training(isolated_root, tmp_path):
    from papermill.exceptions import PapermillExecutionError
    with pytest.raises(PapermillExecutionError) as refused:
        _papermill(isolated_root, "q3", {"runs_optimizers": [{"name": "a", "optimizer": "adam", "momentum": 0.9}]},
                   tmp_path)
    assert refused.value.ename == "ParameterError"
    assert "momentum=0.9 does not apply to optimizer='adam'" in refused.value.evalue
    assert not (isolated_root / "data" / "cache" / "checkpoints").exists() or not any(
        (isolated_root / "data" / "cache" / "checkpoints").iterdir())  # nothing trained
