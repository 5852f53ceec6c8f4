"""Rates measured through fit and predict on generated tensors, the rate cache, and a file's decoding time."""
import pytest
import torch

from labkit.questions.contract import Setting, evaluation
from labkit.report import rates

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


def test_a_rate_is_measured_through_fit_and_predict():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = rates.shrink(Setting("resnet18", 64, 224, 64, 50, True, augment=True))
        assert (s.stored_size, s.image_size, s.batch_size) == (12, 16, 4)  # still upsampled on the device
        kw = dict(device=torch.device("cpu"), steps=1, min_images=4, repeats=1)
        assert rates.measure_rate(s, **kw) > 0 and rates.measure_rate(evaluation(s, 4), **kw) > 0
    finally:
        torch.set_num_threads(threads)


def test_a_quick_rate_times_single_steps_through_fit_and_predict():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = Setting("smallcnn", 16, 16, 4, 2, True, precision="fp32")
        r = rates.quick_rate(s, torch.device("cpu"), steps=2)
        assert r["fast"] >= r["rate"] >= r["slow"] > 0 and (r["precision"], r["batch"]) == ("fp32", 4)
        assert rates.quick_rate(evaluation(s, 8), torch.device("cpu"), steps=2)["batch"] == 8
        assert rates.measurement_batch(Setting("resnet50", 96, 224, 64, 10, True)) == 8  # ImageNet's size: small
    finally:
        torch.set_num_threads(threads)


def test_rates_are_measured_once_per_setting_then_read_from_the_cache(monkeypatch):
    measured = []
    monkeypatch.setattr(rates, "quick_rate", lambda s, device, steps=rates.QUICK_STEPS: measured.append(s) or {
        "rate": 10.0, "fast": 12.0, "slow": 8.0, "precision": "fp32", "batch": 2})
    a, b = Setting("smallcnn", 16, 16, 4, 2, True), Setting("smallcnn", 16, 16, 8, 2, False)
    first = rates.cached_rates([a, b, a], torch.device("cpu"))
    assert measured == [a, b] and first[a]["rate"] == 10.0
    assert rates.cached_rates([b, a], torch.device("cpu")) == first and measured == [a, b]


def test_a_file_of_the_datasets_format_is_decoded_as_the_loaders_do():
    assert 0 < rates.decode_seconds_per_file(("JPEG", (500, 375)), 64) < 1.0
