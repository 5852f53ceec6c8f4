"""``python -m labkit <command>``: data, bench, report, sweep."""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="download, verify and extract the real datasets and ImageNet weights")
    p.add_argument("--datasets", default="stl10,tiny-imagenet-200,dogs-vs-cats",
                   help="comma-separated: stl10, tiny-imagenet-200, dogs-vs-cats (or 'none')")
    p.add_argument("--no-weights", action="store_true", help="skip the ImageNet weights")

    p = sub.add_parser("bench", help="benchmarks against plain baselines, printed as ratios")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats per comparison (medians)")

    p = sub.add_parser("report", help="run every notebook, render HTML and PDF, build the index page")
    p.add_argument("--profile", default="demo", help="demo (default), full or smoke")
    p.add_argument("--only", default="", help="comma-separated notebooks, e.g. q1,q3 (default: all)")
    p.add_argument("--timeout", type=int, default=None, help="seconds a single cell may run (default: no limit)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<profile>)")

    p = sub.add_parser("sweep", help="run a notebook over a parameter grid on Dask and compare the runs")
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

    args = parser.parse_args(argv)
    if args.command == "data":
        from labkit.data.download import SOURCES, fetch_dataset
        names = [] if args.datasets == "none" else [d.strip() for d in args.datasets.split(",") if d.strip()]
        for name in names:
            if name not in SOURCES:
                parser.error(f"unknown dataset {name!r}; allowed: {', '.join(SOURCES)}")
        for name in names:
            print(f"{name}: fetching {SOURCES[name].url}", flush=True)
            if SOURCES[name].note:
                print(f"  note: {SOURCES[name].note}")
            print(f"{name}: ready in {fetch_dataset(name)}", flush=True)
        if not args.no_weights:
            from labkit.models import ARCHS, load_imagenet_state_dict
            for arch in ARCHS:
                load_imagenet_state_dict(arch)
                print(f"ImageNet weights for {arch}: cached (hash verified by torchvision)", flush=True)
        return 0
    if args.command == "report":
        from labkit.report import make_report
        only = [k.strip() for k in args.only.split(",") if k.strip()] or None
        return make_report(args.profile, only, args.timeout, args.out)
    if args.command == "sweep":
        from labkit.cluster import ClusterError
        from labkit.params import ParameterError
        from labkit.sweep import parse_value, sweep
        grid = {}
        for item in args.param:
            if len(item) < 2:
                parser.error(f"-p {' '.join(item)}: give a parameter name and at least one value")
            grid[item[0]] = [parse_value(v) for v in item[1:]]
        try:
            table = sweep(args.notebook, grid, args.profile, args.seeds, args.jobs, args.timeout, args.out,
                          args.scheduler)
        except (ParameterError, ClusterError) as err:  # found before anything ran: one line, no traceback
            parser.exit(2, f"labkit sweep: error: {err}\n")
        except KeyboardInterrupt:
            return 130
        failed = table[table["status"] == "failed"] if "status" in table else table
        if len(failed):
            print(f"FAILED point(s): {', '.join(failed['point'])}", file=sys.stderr)
        return 1 if len(failed) else 0
    if args.command == "bench":
        from labkit.bench import main as bench
        bench(args.repeats)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
