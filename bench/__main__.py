"""`make bench`: every benchmark, each reporting ratios against a baseline measured in the same run.

Run one with `python -m bench NAME`.
"""

import argparse
import importlib

BENCHMARKS = ["similarity", "merging", "train", "probe", "plan", "gpu"]  # module names under bench/, each with main(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=BENCHMARKS)
    parser.add_argument("--out", default="bench/out")
    args = parser.parse_args()
    for name in args.names:
        print(f"== {name}")
        importlib.import_module(f"bench.{name}").main(args.out)


if __name__ == "__main__":
    main()
