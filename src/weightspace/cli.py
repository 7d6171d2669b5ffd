"""The `weightspace` command: library functions for use outside the workflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import WeightspaceError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"


def _validate(args) -> None:
    from .config import load_yaml, validated_config

    config = validated_config(load_yaml(args.config), args.schema, source=args.config)
    print(f"{args.config}: valid ({len(config['datasets'])} datasets, base model {config['base_model']})")


def _cluster(args) -> None:
    import json

    from .clustering import cluster_matrix_file

    summary = cluster_matrix_file(args.similarity, args.k, args.label_pattern, args.exclude, args.affinity, args.seed)
    print(json.dumps(summary, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightspace", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a workflow config as the workflow does, before any job runs",
                       description="Check a workflow config with the checks the Snakefile runs: the schema, "
                                   "names, values, cross-references, the experiments' plans and the base models' folders.")
    p.add_argument("config")
    p.add_argument("--schema", default=str(SCHEMA), help="the workflow's config schema (default: %(default)s)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("cluster", help="spectral clustering of models from a cosine-similarity CSV; prints JSON",
                       description="Cluster the models of a square cosine-similarity CSV (header: model names) "
                                   "into k clusters and score them against each model's group.")
    p.add_argument("--similarity", required=True, metavar="FILE.csv", help="square matrix; the header names the models")
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--label-pattern", required=True, metavar="REGEX",
                   help="a model's group is the first capture group of this regex in its name, e.g. 'data_(\\d+)'")
    p.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="LABEL",
                   help="leave out the models of these groups")
    p.add_argument("--affinity", choices=["shift", "clip", "exp"], default="shift",
                   help="similarity -> affinity: shift = (M + 1) / 2 (the authors'), clip = max(M, 0), exp = Gaussian kernel")
    p.add_argument("--seed", type=int, default=0, help="random_state of the spectral clustering")
    p.set_defaults(func=_cluster)

    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except WeightspaceError as err:
        print(f"weightspace: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
