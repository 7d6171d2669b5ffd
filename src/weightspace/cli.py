"""The `weightspace` command: library functions for use outside the workflow."""

from __future__ import annotations

import argparse
import sys

from .errors import WeightspaceError


def _validate(args) -> None:
    from pathlib import Path

    from .config import load_yaml, validated_config

    schema = Path(args.schema)
    config = validated_config(load_yaml(args.config), schema, source=args.config)
    print(f"{args.config}: valid ({len(config['datasets'])} datasets, base model {config['base_model']})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightspace", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a workflow config against the schema")
    p.add_argument("config")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml")
    p.set_defaults(func=_validate)

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
