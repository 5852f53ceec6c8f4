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
    assert shown[0].data == (f"**{claims.counts(table)}.** On generated data with the real sizes (`labkit data "
                             "--generate-real-size`, for timing) these verdicts test the pipeline, not the original's "
                             "claims.")
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
             # failed, though it holds a summary
             "failed": {"fine": fine, "failed": [flow_run("failed", [1.0, 1.0], error="diverged")]},
             "blind": {"fine": fine, "blind": [flow_run("blind", [1.0, 1.0], artifacts={})]}}
    for name, outcomes in cases.items():
        assert claims._flow_row({"a": ["fine", name]}, outcomes) == {
            "runs": f"fine, {name}", "verdict": "not run", "test": f"gradient flow of {name}: not run"}


def judge_with(data: dict, notebook: str, outcomes: dict, **kwargs) -> pd.DataFrame:
    """``claims.judge`` with ``data`` standing for claims.yaml."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(claims, "_data", lambda: data)
        return claims.judge(notebook, outcomes, **kwargs)


def test_a_notebook_without_claims_has_none():
    assert claims.claims("q0") == []
    assert [c["id"] for c in claims.claims("q1")] == [
        "q1-finetune-beats-svm", "q1-svm-beats-zero-shot", "q1-finetune-beats-zero-shot"]


def test_verdict_at_its_edges():
    v = claims.verdict
    assert v(">", None, 0.001, None, None, True, 0.02) == "inconclusive"  # no difference (< 2 common seeds)
    assert v(">", 0.02, None, 0.01, 0.03, True, 0.02) == "inconclusive"  # no p
    assert v(">", 0.02, 0.05, 0.01, 0.03, True, 0.02) == "inconclusive"  # p exactly at the level: not significant
    assert v(">", 0.02, 0.0499, 0.01, 0.03, True, 0.02) == "reproduced"
    assert v("<", 0.02, 0.0499, 0.01, 0.03, True, 0.02) == "contradicted"
    assert v("<", -0.02, 0.0499, -0.03, -0.01, True, 0.02) == "reproduced"
    assert v(">", 0.02, 0.001, 0.01, 0.03, False, 0.02) == "inconclusive"  # two networks, not two recipes
    # "similar": the interval inside the margin given, its edges included; a significant difference contradicts
    assert v("≈", 0.0, 0.5, -0.02, 0.02, True, 0.02) == "reproduced"
    assert v("≈", 0.0, 0.5, -0.0201, 0.01, True, 0.02) == "inconclusive"
    assert v("≈", 0.0, 0.5, -0.01, 0.0201, True, 0.02) == "inconclusive"
    assert v("≈", 0.0, 0.5, -0.01, 0.01, True, 0.005) == "inconclusive"
    assert v("≈", 0.0, 0.5, -0.01, 0.01, False, 0.02) == "inconclusive"
    assert v("≈", 0.03, 0.01, 0.02, 0.04, True, 0.02) == "contradicted"


def test_the_similar_margin_comes_from_the_claims_file_else_two_points():
    """Per-seed differences of 2, 0 and 3 points: the 90 % t-interval (computed here) lies inside +-5 points, not
    inside +-2, and p = 0.2."""
    outcomes = {"a": runs("a", [0.82, 0.80, 0.83]), "b": runs("b", [0.80, 0.80, 0.80])}
    claim = {"id": "c", "claim": "a is like b", "a": "a", "b": "b", "direction": "≈"}
    d = np.array([0.02, 0.0, 0.03])
    half = stats.t.ppf(0.95, 2) * d.std(ddof=1) / np.sqrt(3)
    wide = judge_with({"similar_margin": 0.05, "qx": [claim]}, "qx", outcomes).iloc[0]
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert wide["verdict"] == "reproduced"
    assert judge_with({"qx": [claim]}, "qx", outcomes).iloc[0]["verdict"] == "inconclusive"


def test_each_row_carries_its_claims_words_statedness_and_confounds():
    data = {"qx": [{"id": "said", "claim": "a beats b", "a": "a", "b": "b", "direction": ">", "stated": True,
                    "confounds": "a trains more epochs"},
                   {"id": "implied", "claim": "b beats c", "a": "b", "b": "c", "direction": ">"}]}
    table = judge_with(data, "qx", {"a": runs("a", [0.9, 0.91]), "b": runs("b", [0.8, 0.8]),
                                    "c": runs("c", [0.7, 0.7])})
    assert table[["notebook", "claim_id", "claim", "runs", "stated", "confounds"]].values.tolist() == [
        ["qx", "said", "a beats b", "a > b", True, "a trains more epochs"],
        ["qx", "implied", "b beats c", "b > c", False, ""]]


def test_a_group_claim_gets_a_row_per_run_of_b():
    """Each run of b against a (two are a group already), a skipped one (gone) first: not run, and the run after
    it still judged."""
    data = {"qx": [{"id": "best", "claim": "a is the best", "a": "a", "b": ["gone", "c"], "direction": ">"}]}
    table = judge_with(data, "qx", {"a": runs("a", [0.9, 0.91]), "c": runs("c", [0.7, 0.7])})
    assert table[["claim_id", "runs", "verdict"]].values.tolist() == [
        ["best:gone", "a > gone", "not run"], ["best:c", "a > c", "reproduced"]]


def test_flow_causal_and_not_run_claims_leave_the_claims_after_them_judged():
    a = runs("a", [0.86, 0.85, 0.87])
    a[0].artifacts["gradient_flow"] = flow_run("a", [0.5, 1.0]).artifacts["gradient_flow"]
    data = {"qx": [{"id": "flow", "claim": "gradients reach", "a": ["a"], "direction": ">", "test": "flow"},
                   {"id": "cause", "claim": "flow explains it", "a": "a", "b": "b", "direction": ">", "test": "causal"},
                   {"id": "gone", "claim": "a beats gone", "a": "a", "b": "gone", "direction": ">"},
                   {"id": "ab", "claim": "a beats b", "a": "a", "b": "b", "direction": ">"}]}
    table = judge_with(data, "qx", {"a": a, "b": runs("b", [0.80, 0.81, 0.80])}).set_index("claim_id")
    assert table.index.tolist() == ["flow", "cause", "gone", "ab"]
    assert table.loc[["flow", "cause", "gone", "ab"], ["runs", "original", "verdict"]].values.tolist() == [
        ["a", "", "reproduced"], ["a vs b", "", "inconclusive"], ["a > gone", "", "not run"],
        ["a > b", "", "reproduced"]]
    assert table.loc["cause", "test"] == ("not testable from these runs: batch size changes the update count and the "
                                          "gradient noise together (see the gradient magnitude against batch size)")
    assert table.loc["gone", "test"] == "a run it needs was skipped, failed or diverged"


def test_columns_no_claim_could_fill_are_empty_not_blank():
    table = judge_with({"qx": [{"id": "gone", "claim": "a beats gone", "a": "a", "b": "gone", "direction": ">"}]},
                       "qx", {"a": runs("a", [0.8, 0.81])})
    assert table[["ours", "seeds", "mean_difference", "p", "p_holm"]].values.tolist() == [[None] * 5]


def test_the_originals_numbers_and_ours_side_by_side():
    """The original's accuracies with two decimals and its test-set sizes (its triplet run: 7,500 images, the
    others 2,500); ours: mean ± the seeds' standard deviation (n - 1), per run."""
    data = {"q2": [{"id": "c", "claim": "ce beats triplet", "a": "ce", "b": "ce_triplet", "direction": ">"}]}
    row = judge_with(data, "q2", {"ce": runs("ce", [0.74, 0.75, 0.76]),
                                  "ce_triplet": runs("ce_triplet", [0.60, 0.62])}).iloc[0]
    assert row["original"] == "73.67 % vs 61.67 % (on 2,500 / 7,500 images)"
    assert row["ours"] == "75.0 % ± 1.0 % (3 seeds) vs 61.0 % ± 1.4 % (2 seeds)"
    assert claims._original("q2", "ce_triplet", "ce") == "61.67 % vs 73.67 % (on 7,500 / 2,500 images)"
    assert claims._original("q3", "adam", "shuffled") == "" == claims._original("q3", "shuffled", "adam")


def test_one_seed_networks_that_do_not_differ_are_said_not_to():
    row = judge_one({"a": "net", "b": "other", "direction": ">"},
                    {"net": runs("net", [0.80]), "other": runs("other", [0.80])})
    assert row["ours"] == "80.0 % (1 seed) vs 80.0 % (1 seed)"
    assert row["verdict"] == "inconclusive" and row["test"] == (
        "McNemar, one seed: these two trained networks do not differ on this test set; one training run cannot "
        "judge a recipe")


def test_one_seed_networks_at_p_exactly_the_level_do_not_differ(monkeypatch):
    monkeypatch.setattr(metrics, "mcnemar", lambda y_true, pred_a, pred_b: 0.05)
    row = judge_one({"a": "a", "b": "b", "direction": ">"}, {"a": runs("a", [0.90]), "b": runs("b", [0.70])})
    assert row["p_holm"] == 0.05 and "these two trained networks do not differ" in row["test"]


def test_on_real_data_ours_says_whether_the_originals_number_is_inside_our_interval():
    """Adam at 82.0, 83.0, 82.5 %: its 95 % t-interval (81.3-83.7 %) holds the original's 82.33 %; SGD at 60, 61,
    62 % (58.5-63.5 %) misses its 63.94 %. Two seeds have an interval too (76.2-88.8 %), one seed none."""
    data = {"q3": [{"id": "c", "claim": "Adam beats SGD", "a": "adam", "b": "sgd", "direction": ">"}]}
    outcomes = {"adam": runs("adam", [0.82, 0.83, 0.825]), "sgd": runs("sgd", [0.60, 0.61, 0.62])}
    assert judge_with(data, "q3", outcomes, real_data=True).iloc[0]["ours"] == (
        "82.5 % ± 0.5 % (3 seeds); original inside our 95 % interval vs "
        "61.0 % ± 1.0 % (3 seeds); original outside it")
    assert judge_with(data, "q3", outcomes).iloc[0]["ours"] == "82.5 % ± 0.5 % (3 seeds) vs 61.0 % ± 1.0 % (3 seeds)"
    two = {"adam": runs("adam", [0.82, 0.83]), "sgd": runs("sgd", [0.60])}
    assert judge_with(data, "q3", two, real_data=True).iloc[0]["ours"] == (
        "82.5 % ± 0.7 % (2 seeds); original inside our 95 % interval vs 60.0 % (1 seed)")


@pytest.mark.parametrize("interval", [(0.8233, 0.84), (0.80, 0.8233)])
def test_the_originals_number_on_an_edge_of_our_interval_is_inside(monkeypatch, interval):
    """No t-interval of real accuracies ends exactly on 82.33 %: the interval is set here to find where an edge
    counts (inside)."""
    monkeypatch.setattr(metrics, "mean_interval", lambda diffs, confidence=0.95: interval)
    data = {"q3": [{"id": "c", "claim": "Adam beats SGD", "a": "adam", "b": "sgd", "direction": ">"}]}
    row = judge_with(data, "q3", {"adam": runs("adam", [0.82, 0.83]), "sgd": runs("sgd", [0.60])}, real_data=True)
    assert row.iloc[0]["ours"].startswith("82.5 % ± 0.7 % (2 seeds); original inside our 95 % interval vs")


def test_a_ranking_is_reproduced_only_when_every_pair_is():
    """Its row: not run when a pair is, else contradicted when a pair is, else reproduced when every pair is
    (inconclusive otherwise: test_holm_over_the_notebooks_claims_and_rankings); stated only when every pair is."""
    def pair(claim_id, a, b, ranking, stated=True):
        return {"id": claim_id, "claim": f"{a} beats {b}", "a": a, "b": b, "direction": ">", "stated": stated,
                "ranking": ranking, "confounds": "epochs"}
    data = {"qx": [pair("ab", "a", "b", "up"), pair("bc", "b", "c", "up"),
                   pair("ba", "b", "a", "mixed"), pair("ac", "a", "c", "mixed", stated=False),
                   pair("ca", "c", "a", "gone"), pair("ax", "a", "x", "gone"),
                   pair("ac1", "a", "c", "one")]}
    table = judge_with(data, "qx", {"a": runs("a", [0.90, 0.91, 0.92, 0.90]), "b": runs("b", [0.80, 0.80, 0.81, 0.80]),
                                    "c": runs("c", [0.70, 0.71, 0.69, 0.70])})
    ranks = table[table["test"] == claims.RANKING_TEST]
    assert ranks[["notebook", "claim_id", "claim", "runs", "direction", "stated", "original", "verdict",
                  "confounds"]].values.tolist() == [
        ["qx", "up", "the ranking a > b > c", "a > b > c", ">", True, "", "reproduced", ""],
        ["qx", "mixed", "the ranking b > a > c", "b > a > c", ">", False, "", "contradicted", ""],
        ["qx", "gone", "the ranking c > a > x", "c > a > x", ">", True, "", "not run", ""],
        ["qx", "one", "the ranking a > c", "a > c", ">", True, "", "reproduced", ""]]
    assert ranks["ranking"].isna().all()  # a ranking's own row belongs to no ranking
    assert claims.counts(table) == "4 reproduced, 2 contradicted, 0 inconclusive, 1 not run"


def show_report(tmp_path, monkeypatch, notebook: str, P: dict, outcomes: dict, question=None):
    """``claims.report`` on a Results writing to tmp_path/out: the table it returns and what it displayed."""
    from types import SimpleNamespace

    import IPython.display

    from labkit.results import Results
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *items: shown.extend(items))
    (tmp_path / "data").mkdir(exist_ok=True)  # no GENERATED.json: real data when data_source is real
    runner = SimpleNamespace(outcomes=outcomes, question=question, data=SimpleNamespace(source=str(tmp_path / "data")))
    table = claims.report(Results(notebook, "cpu", "none", "cpu", {}, tmp_path / "out"), runner, P)
    return table, shown


def test_the_claims_section_on_real_data(tmp_path, monkeypatch):
    """The counts alone lead; ours against the original's interval; claims.csv holds COLUMNS and no index."""
    monkeypatch.setattr(claims, "_data", lambda: {"q3": [
        {"id": "adam-sgd", "claim": "Adam beats SGD", "a": "adam", "b": "sgd", "direction": ">",
         "confounds": "epochs"}]})
    outcomes = {"adam": runs("adam", [0.82, 0.83, 0.825]), "sgd": runs("sgd", [0.60, 0.61, 0.62])}
    table, shown = show_report(tmp_path, monkeypatch, "q3", {"data_source": "real"}, outcomes)
    assert shown[0].data == "**1 reproduced, 0 contradicted, 0 inconclusive, 0 not run.**"
    assert list(shown[1].columns) == ["claim", "runs", "original", "ours", "test", "p_holm", "verdict", "confounds"]
    assert shown[1].values.tolist() == table[list(shown[1].columns)].values.tolist()
    assert table.loc[0, "ours"] == ("82.5 % ± 0.5 % (3 seeds); original inside our 95 % interval vs "
                                    "61.0 % ± 1.0 % (3 seeds); original outside it")
    import csv
    with open(tmp_path / "out" / "claims.csv", encoding="utf-8", newline="") as f:
        header, row = csv.reader(f)
    assert header == claims.COLUMNS
    assert row[:7] == ["q3", "adam-sgd", "Adam beats SGD", "adam > sgd", ">", "False",
                       "82.33 % vs 63.94 % (on 7,500 / 7,500 images)"]


def test_the_claims_section_on_synthetic_data_tests_the_pipeline(tmp_path, monkeypatch):
    """The question's deterministic methods (Q1's SVM) reach the test; ours is not set against the original's."""
    from types import SimpleNamespace
    monkeypatch.setattr(claims, "_data", lambda: {"q1": [
        {"id": "ft-svm", "claim": "fine-tuning beats the SVM", "a": "finetune", "b": "svm", "direction": ">"}]})
    outcomes = {"finetune": runs("finetune", [0.86, 0.85, 0.87]), "svm": runs("svm", [0.80])}
    table, shown = show_report(tmp_path, monkeypatch, "q1", {"data_source": "synthetic"}, outcomes,
                               question=SimpleNamespace(DETERMINISTIC=("svm",)))
    assert shown[0].data == ("**1 reproduced, 0 contradicted, 0 inconclusive, 0 not run.** On synthetic data (the "
                             "demo and smoke profiles) these verdicts test the pipeline, not the original's claims.")
    assert table.loc[0, "test"] == "one-sample t-test of the per-seed differences against the deterministic method"
    assert table.loc[0, "ours"] == "86.0 % ± 1.0 % (3 seeds) vs 80.0 % (1 seed)"
