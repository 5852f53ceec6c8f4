"""``python -m labkit <command>``: data, bench, report, sweep, compare, check-device, cache.

An error a user can fix (:class:`labkit.errors.LabkitError`: a bad parameter, profile or notebook, missing
data, no network, a checksum mismatch, an unsafe archive, a full disk) is one line on stderr and exit code 1;
``--debug`` shows its traceback. Anything else is a bug and keeps Python's traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from labkit.errors import LabkitError
from labkit.params import ParameterError, check_profile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # --debug after the command too; SUPPRESS keeps the command's default from resetting one given before
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", parents=[common], help="download, verify and extract the real datasets and ImageNet "
                                                       "weights (or generate real-size stand-ins)")
    p.set_defaults(func=data)
    p.add_argument("--datasets", default="stl10,tiny-imagenet-200,dogs-vs-cats",
                   help="comma-separated: stl10, tiny-imagenet-200, dogs-vs-cats (or 'none')")
    p.add_argument("--no-weights", action="store_true", help="skip the ImageNet weights")
    p.add_argument("--generate-real-size", action="store_true",
                   help="download nothing: write GENERATED datasets with the real ones' counts, pixel sizes and "
                        "formats where the real data go, to time the cpu profile offline (every page made from "
                        "them says they are generated; their accuracies are not results)")
    p.add_argument("--data-root", default=None,
                   help="the folder the datasets' folders go in (default: labkit's data/); the notebooks find "
                        "them elsewhere only through data_dir")

    p = sub.add_parser("bench", parents=[common], help="benchmarks against plain baselines, printed as ratios")
    p.set_defaults(func=bench)
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats per comparison (medians)")
    p.add_argument("--only", choices=["cpu"], default=None,
                   help="cpu: only CPU training near the machine's limit (precision, channels-last, torch.compile "
                   "against today's path; achieved vs peak GFLOP/s), a few minutes")
    p.add_argument("--json", action="store_true", help="with --only cpu: one JSON object on stdout "
                   "(cpu_train_speedup, achieved_fraction_of_peak), the lines on stderr")
    p.add_argument("--gpu", action="store_true", help="the CUDA benchmark: ResNet-50/18 and the small CNN against "
                   "an ImageFolder + DataLoader loop, Q1's feature pass, the full profile's predicted wall time")

    p = sub.add_parser("check-device", parents=[common],
                       help="on a GPU machine: every question at smoke size on CUDA, "
                       "the CUDA data paths, bf16 vs fp32, a short bench --gpu (one line per check)")
    p.set_defaults(func=check_device)

    p = sub.add_parser("report", parents=[common], help="run every notebook, render HTML and PDF, build the index page")
    p.set_defaults(func=report)
    p.add_argument("--profile", default="demo", help="demo (default), cpu, full or smoke")
    p.add_argument("--only", default="", help="comma-separated notebooks, e.g. q1,q3 (default: all)")
    p.add_argument("--timeout", type=int, default=None, help="seconds a single cell may run (default: no limit)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<profile>)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                   help="a parameter for every notebook that declares it, over the profile (YAML value), e.g. "
                   "--set weights=none; repeatable")
    p.add_argument("--yes", action="store_true", help="start without asking when the forecast exceeds an hour")

    p = sub.add_parser("plan", parents=[common], help="forecast a profile on this machine before running it: "
                       "runs x seeds, data, disk and wall time per notebook")
    p.set_defaults(func=plan)
    p.add_argument("--profile", default="demo", help="demo (default), cpu, full or smoke")
    p.add_argument("--only", default="", help="comma-separated notebooks, e.g. q2 (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                   help="a parameter for every notebook that declares it, as for report")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress on stderr)")

    p = sub.add_parser("sweep", parents=[common], help="run a notebook over a parameter grid on Dask and compare "
                                                        "the runs")
    p.set_defaults(func=sweep)
    p.add_argument("notebook", help="q1, q2 or q3")
    p.add_argument("-p", "--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter and its values, e.g. -p lr 1e-3 1e-4 (repeat -p for a grid)")
    p.add_argument("--seeds", type=int, default=None,
                   help="repeat every point with seeds=[k], k = 0..N-1 (training seeds; seed, the split, stays)")
    p.add_argument("--jobs", type=int, default=None,
                   help="local cluster: worker processes, one point each, CPU threads shared fairly "
                        "(default 1; with GPUs, one worker per GPU)")
    p.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS") or None,
                   help="an existing Dask scheduler, e.g. tcp://head:8786 (default: $DASK_SCHEDULER_ADDRESS, "
                        "else a local cluster)")
    p.add_argument("--profile", default="demo")
    p.add_argument("--timeout", type=int, default=None, help="seconds a single cell may run")
    p.add_argument("--out", default=None, help="folder (default: reports/<profile>/sweeps/<notebook>)")

    p = sub.add_parser("compare", parents=[common], help="compare two reports run by run: what changed, and "
                                                          "whether it is more than noise")
    p.set_defaults(func=compare)
    p.add_argument("a", metavar="A", help="a report's profile folder (reports/demo), a notebook folder "
                                          "(reports/demo/q3) or a sweep point folder")
    p.add_argument("b", metavar="B", help="the same kind of folder, to compare with A")
    p.add_argument("--out", default=".", help="where compare.csv and compare.html go (default: the current folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout, nothing else")
    p.add_argument("--fail-on-change", action="store_true",
                   help="exit 2 when any shared run's predictions, probabilities, status or metrics differ "
                        "(timings aside)")
    p.add_argument("--fail-on-significant", action="store_true",
                   help="exit 2 when any shared run differs beyond noise after Holm")

    p = sub.add_parser("cache", parents=[common], help="what data/cache holds, by kind, with sizes and last use; "
                                                        "--prune removes old checkpoints")
    p.set_defaults(func=cache)
    p.add_argument("--prune", action="store_true",
                   help="remove the checkpoints of runs not used for --older-than (default 7d), or all of --notebook; "
                        "never the datasets")
    p.add_argument("--older-than", default=None, metavar="AGE",
                   help="with --prune: runs last used longer ago than AGE, e.g. 7d, 12h, 30m, 2w")
    p.add_argument("--notebook", default=None, help="with --prune: only this notebook's checkpoints (q1, q2 or q3); "
                                                    "all of them unless --older-than is given too")
    p.add_argument("--dry-run", action="store_true", help="with --prune: say what would be removed, remove nothing")

    args = parser.parse_args(argv)
    try:
        return args.func(parser, args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("labkit: interrupted; run the command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- only a user's errors are shortened, the rest re-raised
        if args.debug or not isinstance(err, LabkitError):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"labkit: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1


def data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from labkit.data.download import SOURCES, fetch_dataset
    names = [] if args.datasets == "none" else [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [name for name in names if name not in SOURCES]
    if unknown:  # before any download starts
        raise ParameterError(f"unknown dataset(s) {', '.join(map(repr, unknown))}; allowed: "
                             f"{', '.join(SOURCES)} or none")
    roots = {name: Path(args.data_root) / name if args.data_root else None for name in names}
    if args.generate_real_size:
        return generate_real_size(roots)
    for name in names:
        print(f"{name}: fetching {SOURCES[name].url}", flush=True)
        if SOURCES[name].note:
            print(f"  note: {SOURCES[name].note}")
        print(f"{name}: ready in {fetch_dataset(name, roots[name])}", flush=True)
    if not args.no_weights:
        from labkit.models import ARCHS, load_imagenet_state_dict
        for arch in ARCHS:
            load_imagenet_state_dict(arch)
            print(f"ImageNet weights for {arch}: cached (hash verified by torchvision)", flush=True)
    return 0


def overrides(pairs: list[str]) -> dict:
    """``--set name=value`` pairs, values read as YAML (numbers, lists, null), as the profile files are."""
    import yaml
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--set {pair!r}: expected NAME=VALUE, e.g. --set weights=none")
        out[name.strip()] = yaml.safe_load(value)
    return out


def generate_real_size(roots: dict[str, Path | None]) -> int:
    """``data --generate-real-size``: each dataset generated (or kept, when an identical set is there), its time,
    and the bytes written in all."""
    import time

    from labkit.data.real_size import generate_real_size as generate
    from labkit.progress import human
    total = 0
    for name, root in roots.items():
        started = time.perf_counter()
        folder, written = generate(name, root)
        if written is None:
            print(f"{name}: {folder} already holds a complete generated set of this generator; kept", flush=True)
            continue
        total += written
        print(f"{name}: generated in {folder} in {time.perf_counter() - started:.0f} s, {human(written, 'B')} "
              f"(GENERATED.json marks it: accuracies on it are not results)", flush=True)
    print(f"written: {total:,} bytes ({human(total, 'B')})")
    return 0


def report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    check_profile(args.profile)  # before the pipeline's imports (seconds): a mistyped profile is answered at once
    from labkit.report.pipeline import make_report
    only = [k.strip() for k in args.only.split(",") if k.strip()] or None
    return make_report(args.profile, only, args.timeout, args.out, overrides(args.overrides), args.yes)


def plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json

    check_profile(args.profile)
    from labkit.report.forecast import forecast
    only = [k.strip() for k in args.only.split(",") if k.strip()] or None
    result = forecast(args.profile, only, overrides=overrides(args.overrides),
                      log=lambda line: print(f"plan: {line}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print("\n".join(result.describe()))
    return 0


def sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    check_profile(args.profile)
    from labkit.sweep.engine import parse_value, sweep as run_sweep
    grid = {}
    for item in args.param:
        if len(item) < 2:
            parser.error(f"-p {' '.join(item)}: give a parameter name and at least one value")
        grid[item[0]] = [parse_value(v) for v in item[1:]]
    table = run_sweep(args.notebook, grid, args.profile, args.seeds, args.jobs, args.timeout, args.out,
                      args.scheduler)
    failed = table[table["status"] == "failed"] if "status" in table else table
    if len(failed):
        print(f"FAILED point(s): {', '.join(failed['point'])}", file=sys.stderr)
    return 1 if len(failed) else 0


def bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.repeats < 1:  # before minutes of warm-up runs end in a median of nothing
        raise ParameterError(f"--repeats={args.repeats} is not allowed; allowed: an integer >= 1")
    if args.gpu:
        from labkit.bench.gpu import main as bench_gpu
        bench_gpu(args.repeats)
        return 0
    from labkit.bench import cpu_train
    if args.json and args.only != "cpu":
        raise ParameterError("--json goes with --only cpu (the whole benchmark prints lines only)")
    if args.only != "cpu":
        from labkit.bench.cpu import main as bench_cpu
        bench_cpu(args.repeats)
    result = cpu_train.main(max(args.repeats, 5), as_json=args.json)
    if args.json:
        import json
        print(json.dumps({k: result[k] for k in ("cpu_train_speedup", "achieved_fraction_of_peak")}))
    return 0


def compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from labkit.report.compare import main as run_compare
    return run_compare(args.a, args.b, args.out, args.json, args.fail_on_change, args.fail_on_significant)


def cache(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from labkit import cache as caches
    if not args.prune:
        if args.older_than or args.notebook or args.dry_run:
            parser.error("--older-than, --notebook and --dry-run go with --prune")
        print(caches.listing())
        return 0
    older = caches.parse_age(args.older_than) if args.older_than else None
    caches.prune(older if older is not None or args.notebook else caches.parse_age("7d"), args.notebook,
                 args.dry_run)
    return 0


def check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from labkit.bench.check_device import main as run_checks
    return run_checks()


if __name__ == "__main__":
    sys.exit(main())
