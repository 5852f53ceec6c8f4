"""``make bench``'s shared-machine line: two real training processes started together take half the cores
each; the comparison's arithmetic (interleaved modes, medians, ratios) with recorded pair times."""
from labkit.bench import share as bench_share
from labkit.training.sharing import cores, running


def test_two_processes_started_together_share_the_cores(isolated_root):
    from labkit.questions import q3_optimizers as q3
    from labkit.questions.registry import resolved_parameters
    q3.load_data(resolved_parameters("q3", synthetic_per_class=8, image_size=16, test_fraction=0.3,
                                     val_fraction=0.15, seed=0))  # as bench_shared_cores does first
    r = bench_share._pair(isolated_root, (0, 1), together=True, share=True, epochs=1, per_class=8, image_size=16)
    assert r["seconds"] > 0 and r["threads"] == [max(1, cores() // 2)] * 2  # each saw the other at its start
    assert not list((isolated_root / "data" / "cache" / "checkpoints").glob("*"))  # keep_checkpoints="none"
    assert running() == []  # nothing left registered


def test_the_comparison_interleaves_the_modes_and_takes_medians(isolated_root, monkeypatch):
    calls = []
    recorded = {(False, True): [10.0, 12.0, 11.0], (True, True): [9.0, 8.0, 30.0], (True, False): [25.0, 20.0, 22.0]}

    def pair(root, seeds, together, share, epochs, per_class, image_size):
        calls.append((together, share))
        return {"seconds": recorded[(together, share)][sum(c == (together, share) for c in calls) - 1],
                "threads": [1, 1] if share and together else [2] * (1 + together)}

    monkeypatch.setattr(bench_share, "_pair", pair)
    monkeypatch.setattr("labkit.questions.q3_optimizers.load_data", lambda *a, **k: None)
    r = bench_share.bench_shared_cores(isolated_root, repeats=3, epochs=2)
    assert calls == [(False, True), (True, True), (True, False)] * 3  # round after round
    assert (r["sequential_s"], r["shared_s"], r["unshared_s"]) == (11.0, 9.0, 22.0)
    assert r["shared_ratio"] == 11.0 / 9.0 and r["unshared_ratio"] == 0.5
    assert bench_share.describe(r) == (
        f"two Q3 Adam trainings at once on {cores()} cores (two processes, 2 epochs each): one after the other "
        f"11.0 s; together with fair thread shares (1+1 threads) 9.0 s -> 1.22x; together without sharing (2+2 "
        f"threads) 22.0 s -> 0.50x (goal: together no slower than one after the other, >= 1.0x)")
