"""``python -m labkit <command>``: data, bench, report, sweep."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="download, verify and extract the real datasets and ImageNet weights")
    p.add_argument("--datasets", default="stl10,tiny-imagenet-200,dogs-vs-cats",
                   help="comma-separated: stl10, tiny-imagenet-200, dogs-vs-cats (or 'none')")
    p.add_argument("--no-weights", action="store_true", help="skip the ImageNet weights")

    p = sub.add_parser("bench", help="benchmarks against plain baselines, printed as ratios")
    p.add_argument("--repeats", type=int, default=5)

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
    if args.command == "bench":
        from labkit.bench import main as bench
        bench(args.repeats)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
