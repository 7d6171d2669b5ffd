"""The `weightspace` command: library functions for use outside the workflow.

The commands that read checkpoints (similarity, cluster DIR..., centroid, probe) take model folders
(safetensors, one file or shards, with or without a head) and peft adapter folders, which are merged
into --base. They read weights tensor by tensor, never all models at once, print a text table (with
--json: JSON) and with --parquet FILE also write the table in long form.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import WeightspaceError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"
CENTRE_KINDS = {"mean": "centroid", "task_arithmetic": "task_arithmetic", "ties": "ties"}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one-line errors with exit status 1, like any other bad input."""

    def error(self, message):
        command = self.prog.partition(" ")[2]
        raise WeightspaceError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


@functools.cache
def _workflow_defaults() -> dict:
    """The settings the commands share with the workflow, as the config schema's defaults: the
    `centroid` section, `region.probe`, and the probe's max_length (finetune.max_length)."""
    from .config import experiment_settings, load_yaml

    settings = experiment_settings({}, SCHEMA)
    finetune = load_yaml(SCHEMA)["properties"]["finetune"]["properties"]
    probe = {**settings["region"]["probe"]}
    probe["max_length"] = probe["max_length"] or finetune["max_length"]["default"]
    return {"centroid": settings["centroid"], "probe": probe}


def workflow_defaults() -> dict:
    return copy.deepcopy(_workflow_defaults())


# -- output ----------------------------------------------------------------------------------------

def _emit(args, table, long_form=None, summary=None, index: bool = False) -> None:
    """Print `table` as aligned text (with its index: row names), or with --json `summary` (default:
    the long form's rows); --parquet writes the long form (default: `table`)."""
    long_form = table if long_form is None else long_form
    if args.parquet:
        from .io import write_parquet

        write_parquet(long_form, args.parquet)
    if args.json:
        rows = long_form.to_dict(orient="records") if summary is None else summary
        print(json.dumps(_jsonable(rows), indent=2, allow_nan=False))
    else:
        print(table.to_string(index=index, float_format=lambda x: f"{x:.4f}"))


def _jsonable(value):
    """`value` with NaN (an undefined silhouette) as null, so that the JSON is strict."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- checkpoints -----------------------------------------------------------------------------------

def _names(args) -> list[str]:
    """Each DIR's name in the tables: the folder as given, or its entry of --names."""
    names = list(args.names or args.dirs)
    if len(names) != len(args.dirs):
        raise WeightspaceError(f"--names: {len(names)} names for {len(args.dirs)} folders")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise WeightspaceError(f"'{repeated[0]}' is given twice (give each model once, or distinct --names)")
    return names


@contextmanager
def _loadable(dirs, base):
    """(the base folder or None, the DIRs), each as a folder with one model.safetensors (adapters
    merged into the base), checked against the base."""
    from .checkpoints import checkpoint_kind
    from .external import loadable_checkpoints

    if base is not None and checkpoint_kind(base) == "adapter":
        raise WeightspaceError(f"--base {base}: a peft adapter; expected the base model's folder")
    with loadable_checkpoints([base] if base is not None else []) as bases, \
            loadable_checkpoints(dirs, base) as models:
        yield (bases[0] if bases else None), models


def task_vectors(folders, names, base, include_head: bool) -> list:
    """Each model minus the base; without a base, the raw weights (see raw_weight_vectors)."""
    from .taskvectors import raw_weight_vectors, task_vector

    if base is None:
        return raw_weight_vectors(folders, names, include_head)
    return [task_vector(f, base, include_head, name=n) for f, n in zip(folders, names)]


def _similarity(args, folders, base, names):
    from .models import torch_device
    from .similarity import stream_similarity

    vectors = task_vectors(folders, names, base, args.include_head)
    return stream_similarity(vectors, args.memory_mb, torch_device(args.device))


# -- commands --------------------------------------------------------------------------------------

def _validate(args) -> None:
    from .config import load_yaml, validated_config

    config = validated_config(load_yaml(args.config), args.schema, source=args.config)
    print(f"{args.config}: valid ({len(config['datasets'])} datasets, base model {config['base_model']})")


def _similarity_command(args) -> None:
    import pandas as pd

    names = _names(args)
    with _loadable(args.dirs, args.base) as (base, folders):
        similarity = _similarity(args, folders, base, names)
    if args.plot:
        from .geometry.report import similarity_heatmap

        reference = f"minus {args.base}" if args.base else "raw weights"
        similarity_heatmap(similarity.cosine, similarity.names, similarity.names, args.plot,
                           title=f"cosine similarity ({reference})")
    square = pd.DataFrame(similarity.cosine, index=similarity.names, columns=similarity.names)
    _emit(args, square, long_form=similarity.long_form(), index=True)


def _cluster(args) -> None:
    if bool(args.dirs) == bool(args.similarity):
        raise WeightspaceError("cluster: give either model folders (DIR...) or --similarity FILE.csv")
    if args.similarity:
        from .clustering import cluster_matrix_file

        summary = cluster_matrix_file(args.similarity, args.k, args.label_pattern, args.exclude, args.affinity, args.seed)
        if args.parquet:
            from .io import write_parquet

            write_parquet(_assignment_table(summary, args.label_pattern), args.parquet)
        print(json.dumps(summary, indent=2))
        return
    from .clustering import cluster_named

    names = _names(args)
    with _loadable(args.dirs, args.base) as (base, folders):
        similarity = _similarity(args, folders, base, names)
    summary = cluster_named(similarity.names, similarity.cosine, args.k, args.label_pattern, args.exclude,
                            args.affinity, args.seed)
    table = _assignment_table(summary, args.label_pattern)
    _emit(args, table, summary=summary)
    if not args.json:
        print()
        print(_accuracy_line(summary))


def _assignment_table(summary: dict, pattern: str):
    """One row per model: its group (from the label pattern), its cluster, and the group matched to that cluster."""
    import pandas as pd

    from .clustering import groups_from_pattern

    names = list(summary["assignments"])
    return pd.DataFrame({
        "model": names,
        "group": groups_from_pattern(names, pattern),
        "cluster": [summary["assignments"][n] for n in names],
        "cluster_group": [summary["cluster_group"].get(str(summary["assignments"][n]), "") for n in names],
    })


def _accuracy_line(summary: dict) -> str:
    f1 = ", ".join(f"{group} {value:.3f}" for group, value in summary["f1"].items())
    return (f"{summary['models']} models, {summary['groups']} groups, k = {summary['k']}: accuracy "
            f"{summary['accuracy']:.3f} (clusters matched one-to-one to groups), purity {summary['purity']:.3f}, "
            f"silhouette of the groups {summary['silhouette_groups']:.3f}; F1 by group: {f1}")


def _centroid(args) -> None:
    import pandas as pd

    from .centroid.centres import build_centre

    names = _names(args)
    out = Path(args.out)
    given = {Path(d).resolve() for d in [*args.dirs, args.base]}
    if out.resolve() in given:
        raise WeightspaceError(f"--out {out}: is one of the input folders; write the merge elsewhere")
    kind = CENTRE_KINDS[args.method]
    settings = workflow_defaults()["centroid"]
    row = {"out": str(out), "method": args.method, "models": len(args.dirs)}
    if args.scale is not None:
        if kind == "centroid":
            raise WeightspaceError("--scale: applies to --method task_arithmetic and ties, not mean")
        settings[kind]["scale"] = args.scale
    if args.density is not None:
        if kind != "ties":
            raise WeightspaceError(f"--density: applies to --method ties, not {args.method}")
        settings["ties"]["density"] = args.density
    if kind != "centroid":
        row.update(settings[kind])
    with _loadable(args.dirs, args.base) as (base, folders):
        build_centre(kind, {n: [f] for n, f in zip(names, folders)}, base, out, settings,
                     command=shlex.join(["weightspace", *args.argv]))
    row["members"] = ", ".join(names)
    _emit(args, pd.DataFrame([row]))


def _probe(args) -> None:
    from .external import tokenizer_folder
    from .models import torch_device
    from .probing import probe

    cfg = workflow_defaults()["probe"]
    for key in ("max_train", "max_test", "max_length"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    check_prepared(args.data, cfg["fit_split"])
    with _loadable([args.dir], args.base) as (base, (model,)):
        tokenizer = tokenizer_folder(model, base)
        if tokenizer is None:
            raise WeightspaceError(f"{args.dir}: has no tokenizer; give --base with the base model's tokenizer")
        table = probe(model, tokenizer, {args.data: Path(args.data)}, cfg, torch_device(args.device),
                      model_id=args.dir)
    shown = ["model", "target", "loss", "loss_se", "prior_loss", "excess_over_prior", "excess_over_prior_se",
             "accuracy", "accuracy_se", "majority_test_accuracy"]
    _emit(args, table[shown], long_form=table)


def check_prepared(folder, fit_split: str) -> None:
    """Refuse a folder that is not a prepared dataset before a model is loaded."""
    for name in ("meta.json", f"{fit_split}.parquet", "test.parquet"):
        if not (Path(folder) / name).exists():
            raise WeightspaceError(f"{folder}: no {name} (a prepared dataset folder, as results/data/NAME/, holds "
                                   "train.parquet, validation.parquet, test.parquet and meta.json)")


# -- the parser ------------------------------------------------------------------------------------

def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def _share(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text}")
    return value


def _all(cap) -> str:
    return "all of them" if cap is None else str(cap)


def _add_output_options(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of the text table")
    p.add_argument("--parquet", metavar="FILE", help="also write the table (long form) to this parquet file")


def _add_weight_options(p, dirs_help: str) -> None:
    p.add_argument("--base", metavar="DIR",
                   help="the pretrained model the DIRs were finetuned from: each model's task vector is its weights "
                        "minus the base's (without --base: the raw weights; a peft adapter needs --base)")
    p.add_argument("--names", nargs="+", metavar="NAME", help=f"names for the DIRs in the tables, one each "
                                                              f"(default: {dirs_help})")
    p.add_argument("--include-head", action="store_true",
                   help="also count the classification heads' tensors (from zero), where all models have them "
                        "with one shape")
    p.add_argument("--memory-mb", type=_positive, default=512, metavar="N",
                   help="memory for the weights in flight, in MB (default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the products are computed (default: auto, a GPU if there is one)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weightspace", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    folders = "model folders (safetensors) or peft adapter folders"
    centre, probe = _workflow_defaults()["centroid"], _workflow_defaults()["probe"]

    p = sub.add_parser("validate", help="check a workflow config as the workflow does, before any job runs",
                       description="Check a workflow config with the checks the Snakefile runs: the schema, "
                                   "names, values, cross-references, the experiments' plans and the base models' folders.")
    p.add_argument("config")
    p.add_argument("--schema", default=str(SCHEMA), help="the workflow's config schema (default: %(default)s)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("similarity", help="cosine similarity of the models' task vectors",
                       description="Cosine similarity of the task vectors of the models in the DIRs (each model "
                                   "minus --base; without it, of their raw weights), in one streaming pass over "
                                   "their weights. Prints the square "
                                   "cosine matrix; --json and --parquet give the long form (model_a, model_b, "
                                   "cosine, dot, euclidean, norm_a, norm_b).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help=folders)
    _add_weight_options(p, "the folders as given")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the cosine matrix as a heatmap into this PNG")
    _add_output_options(p)
    p.set_defaults(func=_similarity_command)

    p = sub.add_parser("cluster", help="spectral clustering of models, scored against their groups",
                       description="Cluster models into k clusters by the cosine similarity of their task vectors "
                                   "and score the clusters against each model's group (from --label-pattern). The "
                                   "models are the DIRs (their similarity is computed as by `weightspace "
                                   "similarity`), or those of a square cosine-similarity CSV (--similarity, whose "
                                   "header names the models; its summary is printed as JSON).")
    p.add_argument("dirs", nargs="*", metavar="DIR", help=folders)
    p.add_argument("--similarity", metavar="FILE.csv",
                   help="instead of DIRs: a square matrix of cosine similarities; the header names the models")
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--label-pattern", required=True, metavar="REGEX",
                   help="a model's group is the first capture group of this regex in its name, e.g. 'data_(\\d+)'")
    p.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="LABEL",
                   help="leave out the models of these groups")
    p.add_argument("--affinity", choices=["shift", "clip", "exp"], default="shift",
                   help="similarity -> affinity: shift = (M + 1) / 2 (the authors'), clip = max(M, 0), exp = Gaussian kernel")
    p.add_argument("--seed", type=int, default=0, help="random_state of the spectral clustering")
    _add_weight_options(p, "the folders as given")
    _add_output_options(p)
    p.set_defaults(func=_cluster)

    p = sub.add_parser("centroid", help="merge models into one: their mean, task arithmetic or TIES",
                       description="Merge the models in the DIRs, each a member of its own, into a Hugging Face "
                                   "model folder --out (model.safetensors, the base's config and tokenizer, a model "
                                   "card): a bare encoder that loads with a new head. Prints what it wrote.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help=folders)
    p.add_argument("--base", metavar="DIR", required=True, help="the pretrained model the DIRs were finetuned from")
    p.add_argument("--out", metavar="DIR", required=True, help="the folder to write the merged model into")
    p.add_argument("--method", choices=list(CENTRE_KINDS), default="mean",
                   help="mean: the average of the models (the paper's centroid); task_arithmetic: base + scale * "
                        "the sum of the task vectors; ties: base + scale * the TIES merge of the task vectors "
                        "(default: %(default)s)")
    p.add_argument("--scale", type=_number, metavar="S",
                   help="task_arithmetic and ties: the task vectors' coefficient (default: the workflow's, "
                        f"{centre['task_arithmetic']['scale']} for task_arithmetic and {centre['ties']['scale']} "
                        "for ties)")
    p.add_argument("--density", type=_share, metavar="D",
                   help="ties: the share of each task vector's entries kept, by magnitude per tensor (default: the "
                        f"workflow's, {centre['ties']['density']})")
    p.add_argument("--names", nargs="+", metavar="NAME", help="names for the DIRs (default: the folders as given)")
    _add_output_options(p)
    p.set_defaults(func=_centroid)

    p = sub.add_parser("probe", help="the generalized loss of a checkpoint on a prepared dataset",
                       description="The generalized loss (paper §3) of one checkpoint on one prepared dataset: "
                                   "a logistic regression on the frozen encoder's first-token features, fitted on "
                                   "the train split and scored on the test split, beside the training-label "
                                   "prior's loss and the majority class's accuracy.")
    p.add_argument("dir", metavar="DIR", help="a model folder (safetensors) or a peft adapter folder")
    p.add_argument("--data", required=True, metavar="DATASET_DIR",
                   help="a prepared dataset folder (train.parquet, test.parquet, meta.json), as results/data/NAME/")
    p.add_argument("--base", metavar="DIR",
                   help="the base model: an adapter is merged into it, and its tokenizer serves a DIR without one")
    p.add_argument("--max-train", type=_at_least(2), metavar="N",
                   help=f"fit on at most N training examples (default: the workflow's, {_all(probe['max_train'])})")
    p.add_argument("--max-test", type=_at_least(1), metavar="N",
                   help=f"score at most N test examples (default: the workflow's, {_all(probe['max_test'])})")
    p.add_argument("--max-length", type=_at_least(8), metavar="N",
                   help=f"tokens per example (default: the workflow's, {probe['max_length']})")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the encoder runs (default: auto, a GPU if there is one)")
    _add_output_options(p)
    p.set_defaults(func=_probe)

    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        args.func(args)
    except WeightspaceError as err:
        print(f"weightspace: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
