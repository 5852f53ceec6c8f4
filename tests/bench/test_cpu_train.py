"""CPU training near its limit (bench --only cpu): at a tiny size, each candidate step runs and trains, FLOPs are
counted, the peak is measured, and the summary's two numbers are the ratios they say they are."""
import json

import pytest
import torch

from labkit.bench import cpu_train


def test_the_cpu_profile_step_is_q2s():
    assert cpu_train.q2_setting() == {"image_size": 64, "batch_size": 64, "num_classes": 50}


@pytest.mark.parametrize("name", [n for n, c in cpu_train.CANDIDATES.items() if not c[2]])
def test_each_candidate_step_updates_the_weights_in_its_precision(name):
    precision, channels_last, compiled = cpu_train.CANDIDATES[name]
    step = cpu_train.training_step(precision, channels_last, compiled, image_size=16, batch_size=2, num_classes=3)
    model = step.model
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    step()
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_flops_are_counted_for_forward_and_backward():
    small = cpu_train.step_flops(image_size=16, batch_size=2, num_classes=3)
    assert small > 0
    assert cpu_train.step_flops(image_size=16, batch_size=4, num_classes=3) == pytest.approx(2 * small, rel=0.01)


def test_a_matmul_peak_is_measured_in_each_precision():
    assert cpu_train.matmul_peak("fp32", n=128, repeats=2) > 0
    assert cpu_train.matmul_peak("bf16", n=128, repeats=2) > 0


def test_the_summary_is_the_ratio_of_the_medians(monkeypatch, capsys):
    monkeypatch.setattr(cpu_train, "q2_setting", lambda: {"image_size": 64, "batch_size": 2, "num_classes": 3})
    monkeypatch.setattr(cpu_train, "CANDIDATES", {k: v for k, v in cpu_train.CANDIDATES.items() if not v[2]})
    seconds = {name: 0.1 * (i + 1) for i, name in enumerate(cpu_train.CANDIDATES)}
    monkeypatch.setattr(cpu_train, "interleaved", lambda fns, repeats: {k: seconds.get(k, 0.1) for k in fns})
    monkeypatch.setattr(cpu_train, "step_flops", lambda **s: 2e9)
    monkeypatch.setattr(cpu_train, "matmul_peak", lambda precision, **k: 100.0)
    monkeypatch.setattr(cpu_train, "RULE_CHECKS", [("tiny", "smallcnn", 16, 2, True)])
    monkeypatch.setattr(cpu_train, "WINDOW_CHECKS", [])
    for native in (True, False):
        monkeypatch.setattr("labkit.device.native_bf16_cpu", lambda: native)
        monkeypatch.setattr(cpu_train, "native_bf16_cpu", lambda: native)
        result = cpu_train.main(repeats=1, as_json=True)
        chosen = "bf16 autocast, channels-last" if native else cpu_train.TODAY
        assert result["chosen"] == chosen
        assert result["cpu_train_speedup"] == pytest.approx(seconds[cpu_train.TODAY] / seconds[chosen], rel=1e-3)
        assert result["achieved_fraction_of_peak"] == pytest.approx(2 / seconds[chosen] / 100.0, rel=1e-3)
        captured = capsys.readouterr()
        assert captured.out == "" and "achieved" in captured.err  # --json: the lines go to stderr


def test_the_window_check_times_plain_convolutions_against_window_ones(monkeypatch):
    from labkit.training.convs import WindowConv2d
    from labkit.training import standin
    monkeypatch.setitem(standin.SETTINGS["standin-smoke"], "batch_size", 2)
    monkeypatch.setattr(cpu_train, "WINDOW_CHECKS", [("smoke", "standin-smoke")])
    timed = {}

    def interleaved(fns, repeats):
        timed.update({name: {type(m) for m in fn.model.modules() if isinstance(m, torch.nn.Conv2d)}
                      for name, fn in fns.items()})
        return {"plain": 0.3, "window": 0.1}
    monkeypatch.setattr(cpu_train, "interleaved", interleaved)
    result = cpu_train.window_conv_checks(repeats=1, quiet=True)
    assert timed == {"plain": {torch.nn.Conv2d}, "window": {WindowConv2d}}
    assert result.keys() == {"smoke"} and result["smoke"]["window_conv_speedup"] > 1


def test_bench_only_cpu_json_prints_one_object(monkeypatch, capsys):
    from labkit import cli
    monkeypatch.setattr(cpu_train, "main", lambda repeats, as_json: {
        "cpu_train_speedup": 1.5, "achieved_fraction_of_peak": 0.2, "img_per_s": {}})
    assert cli.main(["bench", "--only", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cpu_train_speedup": 1.5, "achieved_fraction_of_peak": 0.2}
    with pytest.raises(cli.ParameterError, match="--json goes with --only cpu"):
        cli.main(["--debug", "bench", "--json"])
