"""The claims, judged on constructed outcomes: each verdict where it must come out, direction always counting."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from labkit import metrics
from labkit.questions import claims
from labkit.questions.experiments import Outcome

N = 2000
Y = np.arange(N) % 2


def runs(name: str, accuracies, seeds=None, error=None) -> list[Outcome]:
    """One Outcome per seed, right on the first ``accuracy`` share of the test images (offset by seed, so two
    runs' mistakes overlap only partly, as two networks' would)."""
    out = []
    for k, acc in zip(seeds or range(len(accuracies)), accuracies):
        right = np.roll(np.arange(N) < round(acc * N), 37 * k + 11 * len(name))
        pred = np.where(right, Y, 1 - Y)
        out.append(Outcome(name, {}, k, None, Y if error is None else np.array([]),
                           pred if error is None else np.array([]), error=error))
    return out


def judge_one(claim: dict, outcomes: dict, deterministic=()) -> dict:
    base = {"id": "c", "claim": "a beats b", "stated": True, "confounds": ""}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(claims, "_data", lambda: {"similar_margin": 0.02, "qx": [{**base, **claim}]})
        table = claims.judge("qx", outcomes, deterministic)
    return table.iloc[0].to_dict()


def test_a_direction_blind_vote_is_gone():
    """A wins one seed, B the other, equal means: no verdict of a difference (a per-seed vote said 2 of 3)."""
    row = judge_one({"a": "a", "b": "b", "direction": ">"},
                    {"a": runs("a", [0.85, 0.75, 0.80]), "b": runs("b", [0.75, 0.85, 0.80])})
    assert row["verdict"] == "inconclusive" and row["mean_difference"] == pytest.approx(0.0)
    assert row["seeds"] == 3 and row["test"].startswith("paired t-test over seeds")


def test_reproduced_contradicted_inconclusive_and_not_run():
    a, b = runs("a", [0.86, 0.85, 0.87]), runs("b", [0.80, 0.81, 0.80])
    reproduced = judge_one({"a": "a", "b": "b", "direction": ">"}, {"a": a, "b": b})
    assert reproduced["verdict"] == "reproduced"
    diffs = np.array([0.06, 0.04, 0.07])
    assert reproduced["mean_difference"] == pytest.approx(diffs.mean())
    assert reproduced["p"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert (reproduced["ci_low"], reproduced["ci_high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert reproduced["min_detectable"] == pytest.approx(
        (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * diffs.std(ddof=1) / np.sqrt(3))
    contradicted = judge_one({"a": "b", "b": "a", "direction": ">"}, {"a": a, "b": b})
    assert contradicted["verdict"] == "contradicted" and contradicted["mean_difference"] < 0
    assert judge_one({"a": "a", "b": "b", "direction": "<"}, {"a": a, "b": b})["verdict"] == "contradicted"
    noisy = judge_one({"a": "a", "b": "b", "direction": ">"},
                      {"a": runs("a", [0.82, 0.79, 0.84]), "b": runs("b", [0.80, 0.81, 0.80])})
    assert noisy["verdict"] == "inconclusive" and noisy["min_detectable"] > 0
    assert judge_one({"a": "a", "b": "gone", "direction": ">"}, {"a": a})["verdict"] == "not run"  # skipped
    failed = judge_one({"a": "a", "b": "b", "direction": ">"}, {"a": a, "b": runs("b", [0.8], error="OOM")})
    assert failed["verdict"] == "not run"


def test_similar_needs_the_90_percent_interval_inside_the_margin():
    close = judge_one({"a": "a", "b": "b", "direction": "≈"},
                      {"a": runs("a", [0.800, 0.805, 0.802]), "b": runs("b", [0.801, 0.803, 0.800])})
    assert close["verdict"] == "reproduced" and -0.02 <= close["ci_low"] and close["ci_high"] <= 0.02
    apart = judge_one({"a": "a", "b": "b", "direction": "≈"},
                      {"a": runs("a", [0.86, 0.85, 0.87]), "b": runs("b", [0.80, 0.81, 0.80])})
    assert apart["verdict"] == "contradicted"
    wide = judge_one({"a": "a", "b": "b", "direction": "≈"},
                     {"a": runs("a", [0.85, 0.76, 0.80]), "b": runs("b", [0.80, 0.80, 0.81])})
    assert wide["verdict"] == "inconclusive"


def test_one_seed_judges_two_networks_never_a_recipe():
    row = judge_one({"a": "a", "b": "b", "direction": ">"}, {"a": runs("a", [0.90]), "b": runs("b", [0.70])})
    assert row["verdict"] == "inconclusive" and row["p"] < 1e-6
    assert "these two trained networks differ on this test set" in row["test"] and "recipe" in row["test"]


def test_a_recipe_against_a_deterministic_method_and_two_deterministic_methods():
    seeds = judge_one({"a": "ft", "b": "svm", "direction": ">"},
                      {"ft": runs("ft", [0.86, 0.85, 0.87]), "svm": runs("svm", [0.80])}, deterministic={"svm"})
    assert seeds["verdict"] == "reproduced" and seeds["test"].startswith("one-sample t-test")
    assert seeds["p"] == pytest.approx(stats.ttest_1samp([0.06, 0.05, 0.07], 0).pvalue)
    fixed = judge_one({"a": "svm", "b": "zs", "direction": ">"},
                      {"svm": runs("svm", [0.80]), "zs": runs("zs", [0.60])}, deterministic={"svm", "zs"})
    assert fixed["verdict"] == "reproduced" and "recipe test" in fixed["test"]
    oa, ob = runs("svm", [0.80])[0], runs("zs", [0.60])[0]
    assert fixed["p"] == pytest.approx(metrics.mcnemar(Y, oa.y_pred, ob.y_pred))


def test_holm_over_the_notebooks_claims_and_rankings(monkeypatch):
    data = {"similar_margin": 0.02, "qx": [
        {"id": "ab", "claim": "a > b", "a": "a", "b": "b", "direction": ">", "stated": True, "ranking": "r"},
        {"id": "bc", "claim": "b > c", "a": "b", "b": "c", "direction": ">", "stated": False, "ranking": "r"},
        {"id": "cause", "claim": "a because of flow", "a": "a", "b": "b", "direction": ">", "test": "causal"}]}
    monkeypatch.setattr(claims, "_data", lambda: data)
    table = claims.judge("qx", {"a": runs("a", [0.90, 0.91, 0.92]), "b": runs("b", [0.80, 0.81, 0.80]),
                                "c": runs("c", [0.82, 0.79, 0.81])})
    rows = table.set_index("claim_id")
    p = [rows.loc["ab", "p"], rows.loc["bc", "p"]]
    assert [rows.loc["ab", "p_holm"], rows.loc["bc", "p_holm"]] == pytest.approx(
        __import__("labkit.questions.experiments", fromlist=["holm"]).holm(p))
    assert rows.loc["ab", "verdict"] == "reproduced" and rows.loc["bc", "verdict"] == "inconclusive"
    assert rows.loc["r", "verdict"] == "inconclusive" and rows.loc["r", "runs"] == "a > b > c"
    assert rows.loc["cause", "verdict"] == "inconclusive" and "not testable" in rows.loc["cause", "test"]
    assert claims.counts(table) == "1 reproduced, 0 contradicted, 2 inconclusive, 0 not run"
    assert list(table.columns[:len(claims.COLUMNS)]) == claims.COLUMNS


def test_every_claim_names_runs_its_notebook_has():
    """The claims file against the notebooks' own run names, so a renamed run cannot leave a claim unjudged."""
    from labkit.questions import registry
    for key in ("q1", "q2", "q3"):
        P = registry.resolved_parameters(key, "full")
        names = {n for part in registry.question(key).plan(P).values() for n in part}
        for claim in claims.claims(key):
            for side in ("a", "b"):
                value = claim.get(side)
                for name in (value if isinstance(value, list) else [value] if value else []):
                    assert name in names, (key, claim["id"], name)


def test_on_real_size_generated_data_the_verdicts_test_the_pipeline(tmp_path, monkeypatch):
    """data_source real on a folder marked GENERATED.json (``labkit data --generate-real-size``): the claims
    section says the verdicts test the pipeline, and ours are not set against the original's interval."""
    import json
    from types import SimpleNamespace

    import IPython.display

    from labkit.results import Results
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *items: shown.extend(items))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "GENERATED.json").write_text(json.dumps({"real_size": True}))
    outcomes = {"adam": runs("adam", [0.8, 0.82]), "sgd": runs("sgd", [0.6, 0.62])}
    runner = SimpleNamespace(outcomes=outcomes, question=None, data=SimpleNamespace(source=str(tmp_path / "data")))
    table = claims.report(Results("q3", "cpu", "none", "cpu", {}, tmp_path), runner, {"data_source": "real"})
    assert "generated data with the real sizes" in shown[0].data and "test the pipeline" in shown[0].data
    assert not table["ours"].str.contains("original inside|original outside").any()


def flow_run(name: str, mean_abs_grad, seed: int = 0, error=None, artifacts=None) -> Outcome:
    """One seed's Outcome with a gradient-flow summary as q3's ``train_and_test`` gives it (first layer first)."""
    flow = pd.DataFrame({"layer": [f"layer{i}" for i in range(len(mean_abs_grad))], "mean_abs_grad": mean_abs_grad,
                         "max_abs_grad": mean_abs_grad})
    return Outcome(name, {}, seed, None, Y, Y, error=error,
                   artifacts={"gradient_flow": flow} if artifacts is None else artifacts)


def test_a_flow_claim_is_judged_on_each_runs_first_seed_at_its_worst_run():
    """bs16's first layer gets 0.5 / 2.0 = 0.25 of its largest layer, bs64's 0.02 / 4.0 = 0.005: bs64 is the worst,
    above 1e-3. The second seeds (one failed and without a summary, one with its first layer on top) never count."""
    outcomes = {"bs16": [flow_run("bs16", [0.5, 2.0, 1.0]), flow_run("bs16", [], seed=1, error="OOM", artifacts={})],
                "bs64": [flow_run("bs64", [0.02, 4.0, 1.0]), flow_run("bs64", [5.0, 1.0], seed=1)]}
    row = judge_one({"a": ["bs16", "bs64"], "direction": ">", "test": "flow"}, outcomes)
    assert {k: row[k] for k in ("runs", "original", "verdict", "ours", "test")} == {
        "runs": "bs16, bs64", "original": "", "verdict": "reproduced",
        "ours": "first layer at 0.005 of the largest layer's mean gradient at worst (bs64)",
        "test": "first layer's mean |gradient| >= 0.001 x the largest layer's, in every run (first seed)"}
    assert row["p"] is None and row["p_holm"] is None  # no p-value: Holm leaves it out


def test_a_flow_claim_on_one_run_named_without_a_list():
    """``a: adam`` (a name, not a list): its row names the run (it listed the name's letters, "a, d, a, m")."""
    row = judge_one({"a": "adam", "direction": ">", "test": "flow"}, {"adam": [flow_run("adam", [0.3, 0.6])]})
    assert (row["runs"], row["verdict"]) == ("adam", "reproduced")
    assert row["ours"] == "first layer at 0.5 of the largest layer's mean gradient at worst (adam)"


@pytest.mark.parametrize("flow, verdict, ratio", [
    ([0.001, 1.0, 0.5], "reproduced", "0.001"),  # exactly FLOW_RATIO: reaches the first layer
    ([0.0009, 1.0, 0.5], "contradicted", "0.0009"),
    ([0.002, 0.5, 0.25], "reproduced", "0.004"),  # every gradient below 1: still a ratio to the largest
    ([0.0, 0.0, 0.0], "contradicted", "0"),  # no gradient anywhere (not 0 / 0)
    ([], "contradicted", "0"),  # no layer recorded
])
def test_flow_ratio_of_the_first_layer_to_the_largest(flow, verdict, ratio):
    row = claims._flow_row({"a": "adam"}, {"adam": [flow_run("adam", flow)]})
    assert row == {"runs": "adam", "verdict": verdict,
                   "ours": f"first layer at {ratio} of the largest layer's mean gradient at worst (adam)",
                   "test": "first layer's mean |gradient| >= 0.001 x the largest layer's, in every run (first seed)"}


def test_a_flow_claim_is_not_run_when_a_runs_first_seed_is_missing_failed_or_without_flow():
    fine = [flow_run("fine", [1.0, 1.0])]
    cases = {"gone": {"fine": fine},  # skipped
             "failed": {"fine": fine, "failed": [flow_run("failed", [1.0, 1.0], error="diverged")]},  # its summary too
             "blind": {"fine": fine, "blind": [flow_run("blind", [1.0, 1.0], artifacts={})]}}
    for name, outcomes in cases.items():
        assert claims._flow_row({"a": ["fine", name]}, outcomes) == {
            "runs": f"fine, {name}", "verdict": "not run", "test": f"gradient flow of {name}: not run"}
