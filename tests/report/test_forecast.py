"""The full profile's workload, from its parameter files and the real datasets' sizes, and the predicted
wall time's arithmetic; one rate measured at tiny size on the CPU."""
import pytest

from labkit.report import forecast as wt
from labkit.report import rates

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


@pytest.fixture(scope="module")
def passes():
    return wt.full_profile_passes()


def images(passes, notebook, what):
    return sum(p.images for p in passes if p.notebook == notebook and what in p.what)


def test_q1_feature_pass_and_finetuning(passes):
    # the feature pass runs in fp32 as q1.extract does; training and the tests of trained runs as the run asks
    assert [p.what for p in passes if p.setting.precision == "fp32"] == ["feature pass (train + test)"]
    assert images(passes, "q1", "feature pass") == 5_000 + 8_000
    assert images(passes, "q1", "finetune seed 0: training") == 5_000 * 5  # val_fraction 0 (the original's data)
    assert images(passes, "q1", "training") == 5_000 * 5 * 3  # 5 epochs, 3 training seeds
    assert images(passes, "q1", "finetune seed 0: test") == 8_000
    train = next(p.setting for p in passes if p.what.endswith("training") and p.notebook == "q1")
    assert (train.arch, train.stored_size, train.image_size, train.batch_size, train.freeze_until) == \
        ("resnet50", 96, 224, 64, "layer2")


def test_q2_runs_on_fifty_classes(passes):
    train = 50 * 500  # val_fraction 0: all 500 training images per class
    assert images(passes, "q2", "ce seed 0: training") == train * 12
    assert images(passes, "q2", "ce_triplet seed 0: training") == train // 64 * 64 * 11  # P x K, drop_last
    assert images(passes, "q2", "ce_center seed 0: test") == 50 * 50
    assert {p.setting.stored_size for p in passes if p.notebook == "q2"} == {64}


def test_q3_trains_each_distinct_run_once_per_seed(passes):
    trained = [p for p in passes if p.notebook == "q3" and p.setting.train]
    # 15 run names; adam_bs64, shuffled and adam_b1_0.9_b2_0.999 are adam's settings again
    assert len(trained) == 12 * 3
    assert images(passes, "q3", "sgd_bs1 seed 2: training") == (25_000 - 7_500) * 5  # the whole 70 %
    assert {p.setting.batch_size for p in trained} == {1, 16, 32, 64, 256}


def test_prediction_is_images_over_rates():
    s = wt.Setting("smallcnn", 16, 16, 4, 2, True)
    e = wt.Setting("smallcnn", 16, 16, 8, 2, False)
    passes = [wt.Pass("q3", "a: training", s, 1000), wt.Pass("q3", "a: test", e, 300),
              wt.Pass("q1", "feature pass", e, 30)]
    assert wt.predict_seconds(passes, {s: 100.0, e: 300.0}) == {"q3": 11.0, "q1": 0.1}
    lines = wt.describe(passes, {s: 100.0, e: 300.0})
    assert lines[0].startswith("  q3: 11 s (1 training run(s): 1,000 training images in all at 100 img/s")
    assert lines[-1].startswith("  in all: 11 s")


def test_the_cpu_profile_trains_on_subsets_and_tests_on_everything():
    passes = wt.full_profile_passes("cpu")
    assert images(passes, "q1", "finetune seed 0: training") == 5_000 * 2
    assert images(passes, "q1", "finetune seed 0: test") == 8_000
    assert images(passes, "q2", "ce seed 0: training") == 50 * 300 * 2
    assert images(passes, "q2", "ce seed 0: test") == 50 * 50
    assert images(passes, "q3", "sgd_bs1 seed 0: training") == 2 * 4_000
    assert images(passes, "q3", "adam seed 2: test") == 7_500
    assert {p.setting.stored_size for p in passes if p.notebook != "q3"} == {96, 64}


def test_the_forecast_measures_each_setting_once_then_reads_the_rate_cache(monkeypatch):
    measured = []
    monkeypatch.setattr(rates, "quick_rate", lambda s, device, steps=wt.QUICK_STEPS: measured.append(s) or {
        "rate": 100.0, "fast": 125.0, "slow": 80.0, "precision": "fp32", "batch": 4})
    first = wt.forecast("smoke", ["q3"])
    n = len(measured)
    assert n == len({p.setting for p in wt.registry.question("q3").passes(wt._parameters("q3", "smoke", None))})
    second = wt.forecast("smoke", ["q3"])
    assert len(measured) == n and second.to_json() == first.to_json()
    q3 = first.notebooks["q3"]
    passes = wt.registry.question("q3").passes(wt._parameters("q3", "smoke", None))
    work = sum(p.images for p in passes)
    assert q3.seconds == pytest.approx(work / 100 + wt.NOTEBOOK_OVERHEAD_SECONDS)
    assert q3.low_seconds == pytest.approx(work / 125 + wt.NOTEBOOK_OVERHEAD_SECONDS * wt.ESTIMATE_SPREAD[0])
    assert q3.high_seconds == pytest.approx(work / 80 + wt.NOTEBOOK_OVERHEAD_SECONDS * wt.ESTIMATE_SPREAD[1])
    j = first.to_json()
    assert set(j) >= {"total_seconds", "low_seconds", "high_seconds", "notebooks"}
    assert set(j["notebooks"]["q3"]) >= {"seconds", "runs", "seeds", "data_missing", "disk_bytes"}
    assert (j["notebooks"]["q3"]["runs"], j["notebooks"]["q3"]["seeds"]) == (15, 2)


def test_missing_real_data_is_named_with_its_download(monkeypatch):
    monkeypatch.setattr(rates, "quick_rate", lambda s, device, steps=wt.QUICK_STEPS: {
        "rate": 1e4, "fast": 1e4, "slow": 1e4, "precision": "bf16", "batch": 4})
    monkeypatch.setattr(wt, "decode_seconds_per_file", lambda kind, size: 0.001)
    fc = wt.forecast("cpu", ["q3"], overrides={"weights": "none"})  # q3 declares no weights: ignored
    (missing,) = fc.notebooks["q3"].data_missing
    assert "dogs-vs-cats" in missing and "make data" in missing and "0.82 GB" in missing
    assert any(line.startswith("decoding 25,000 files") for line in fc.notebooks["q3"].lines)
    assert fc.notebooks["q3"].disk_bytes > wt.DOWNLOAD_BYTES["dogs-vs-cats"]
