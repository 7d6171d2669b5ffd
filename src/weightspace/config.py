"""The one check of a workflow config: the JSON schema, its defaults, names, values, every
cross-reference, the experiments' plans and the base models' folders.

`weightspace validate` and the Snakefile both call validated_config, so a config that one accepts
the other accepts too. Every problem is reported as one line naming the file, the key and what was
expected.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path

import jsonschema
import yaml

from .errors import WeightspaceError

# Names of datasets, models, families, granularities and experiments become path parts and
# wildcards: letters, digits, '_', '.' and '-', not starting with '.' or '-'.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
NAME_RULE = "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
# Dataset names the workflow's own path parts would clash with: In's centroid (region/.../centroid/in),
# a subsample run ({dataset}/n{size}/...), a seed folder and a run from another base ({dataset}/base-{base}/...).
RESERVED_DATASET = re.compile(r"^(in|n\d+|seed\d+|base-.*)$")
# Architectures whose position ids start after the padding index (max_position_embeddings counts those).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "data2vec-text", "xmod")


# JSON Schema counts 1.0 as an integer; a seed 1.0 would name folders seed1.0 and a batch size 16.0
# fail inside a job, so an integer key takes integers only.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)),
)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML lets the later win unseen)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are overridden by the mapping's own keys, on purpose
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path) -> dict:
    """A YAML file that holds a mapping, or a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightspaceError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise WeightspaceError(f"{path}: not a UTF-8 text file (byte {err.start}); expected a YAML config") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise WeightspaceError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WeightspaceError(f"{path}: expected a mapping of keys at the top level, got a {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem}, line {mark.line + 1}"
    return str(err).splitlines()[0]


@functools.cache
def _schema(path: str) -> dict:
    """The config schema, read once per process (validation and experiment_settings both use it)."""
    return load_yaml(path)


def validated_config(config, schema_path, source: str = "config") -> dict:
    """Return a copy of `config` with defaults filled in, or raise a one-line WeightspaceError.

    Checks, in order: the schema (types, ranges, names), finite numbers, the cross-references
    between sections, the base models' folders and positions, and the plans of the geometry,
    region and centroid experiments - everything the workflow checks before it runs a job.
    """
    if not isinstance(config, dict):
        raise WeightspaceError(f"{source}: expected a mapping of keys at the top level, got a {type(config).__name__}")
    schema = _schema(str(schema_path))
    config = copy.deepcopy(dict(config))
    validator = _Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise WeightspaceError(f"{source}: {_describe(error)}")
    try:
        _check_finite(config, "")
        _fill_defaults(config, schema)
        _check_references(config)
        _check_models(config)
        _check_external(config)
        _check_plans(config)
    except WeightspaceError as err:
        raise WeightspaceError(f"{source}: {err}") from None
    return config


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        patterns = error.schema.get("patternProperties", {})
        extra = sorted(k for k in set(error.instance) - set(allowed) if not any(re.search(p, k) for p in patterns))
        return f"unknown key '{_join(key, extra[0])}' (expected one of: {', '.join(allowed)})"
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in error.instance][0]
        return f"missing key '{_join(key, missing)}'"
    if error.validator == "type":
        return f"key '{key}': expected {error.validator_value}, got {error.instance!r}"
    if error.validator == "enum":
        return f"key '{key}': expected one of {error.validator_value}, got {error.instance!r}"
    if error.validator == "pattern" and error.schema.get("pattern") == NAME_PATTERN:
        return f"key '{key}': the name {error.instance!r} is not allowed (names: {NAME_RULE})"
    if error.validator == "uniqueItems":
        return f"key '{key}': {_first_repeat(error.instance)!r} is given twice (expected distinct values)"
    return f"key '{key}': {error.message}"


def _first_repeat(values):
    seen = []
    for value in values:
        if value in seen:
            return value
        seen.append(value)
    return None


def _join(key: str, child: str) -> str:
    return child if key == "<top level>" else f"{key}.{child}"


def _check_finite(value, key: str) -> None:
    """NaN and infinity pass the schema's ranges (every comparison with NaN is false); no key means them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise WeightspaceError(f"key '{key}': expected a finite number, got {value}")
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, child in children:
        _check_finite(child, f"{key}.{name}" if key else str(name))


def _fill_defaults(value, schema) -> None:
    if not isinstance(value, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            _fill_defaults(value[name], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name in set(value) - set(schema.get("properties", {})):
            _fill_defaults(value[name], extra)


def _check_references(config: dict) -> None:
    datasets = config["datasets"]
    for name in datasets:
        if RESERVED_DATASET.match(name):
            raise WeightspaceError(
                f"key 'datasets.{name}': the name clashes with the workflow's own path parts "
                "(in, n<digits>, seed<digits>, base-<model>); rename the dataset")
    for family, members in config.get("families", {}).items():
        for name in members:
            if name not in datasets:
                raise WeightspaceError(
                    f"key 'families.{family}' names dataset '{name}', "
                    f"which is not under 'datasets' (known: {', '.join(sorted(datasets))})"
                )
    if config["base_model"] not in config["models"]:
        raise WeightspaceError(
            f"key 'base_model' is '{config['base_model']}', expected one of "
            f"the names under 'models' ({', '.join(sorted(config['models']))})"
        )
    for name, spec in datasets.items():
        if spec["source"] in ("hf", "local"):
            for key in ("text_a", "label"):
                if not spec.get(key):
                    raise WeightspaceError(f"dataset '{name}' (source {spec['source']}) needs key 'datasets.{name}.{key}'")
        if spec["source"] == "hf" and not spec.get("path"):
            raise WeightspaceError(f"dataset '{name}' (source hf) needs key 'datasets.{name}.path'")
        if spec["source"] == "local":
            if "train" not in spec.get("files", {}):
                raise WeightspaceError(f"dataset '{name}' needs key 'datasets.{name}.files.train'")
            for split, file in spec["files"].items():
                if not Path(file).is_file():
                    raise WeightspaceError(f"key 'datasets.{name}.files.{split}': file {file} not found")


def _check_models(config: dict) -> None:
    """Each model's folder (local and package models; hub models are fetched on the login node) and
    the tokens a model can take against the configured max_length."""
    from .checkpoints import check_model

    lengths = {"finetune.max_length": config["finetune"]["max_length"]}
    if config.get("region") is not None and config["region"]["probe"]["max_length"]:
        lengths["region.probe.max_length"] = config["region"]["probe"]["max_length"]
    for name, spec in config["models"].items():
        model_config = check_model(name, spec, config["trust_remote_code"])
        positions = model_positions(model_config) if model_config else None
        for key, length in lengths.items():
            if positions is not None and length > positions:
                raise WeightspaceError(f"key '{key}' is {length}, but model '{name}' takes at most {positions} tokens")


def _check_external(config: dict) -> None:
    """Each external checkpoint's name, base and (local ones) folder against its base's."""
    from .external import base_of, base_folder_of, check_external

    for name, spec in config.get("external", {}).items():
        if name in config["datasets"]:
            raise WeightspaceError(f"key 'external.{name}': the name is also a dataset's; the experiments' lists "
                                   "name both, so rename one")
        if bool(spec.get("path")) == bool(spec.get("hub")):
            raise WeightspaceError(f"key 'external.{name}': give 'path' (a folder) or 'hub' (a hub id), one of them")
        base = base_of(config, name)
        if base not in config["models"]:
            raise WeightspaceError(f"key 'external.{name}.base' is '{base}', expected one of the names under "
                                   f"'models' ({', '.join(sorted(config['models']))})")
        check_external(name, spec, base_folder_of(config, base), config["trust_remote_code"])


def model_positions(model_config: dict) -> int | None:
    """The number of tokens a model's position embeddings cover (None: no such limit in its config)."""
    positions = model_config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if model_config.get("model_type") in PADDING_OFFSET_TYPES:
        positions -= int(model_config.get("pad_token_id") or 0) + 1
    return positions


def _check_plans(config: dict) -> None:
    """Build the plans the rule files build at parse time, so their errors surface here."""
    from .centroid import plan as centroid_plan
    from .geometry.plan import check_experiments
    from .region.plan import region_plan

    if config.get("geometry") is not None:
        check_experiments(config)
    region_plan(config)
    if config.get("centroid") is not None:
        centroid_plan.grid(config)
        for target in centroid_plan.targets(config):
            centroid_plan.centre_models(config, target)


EXPERIMENTS = ("geometry", "region", "centroid")


def experiment_settings(config: dict, schema_path) -> dict[str, dict]:
    """Each experiment section of a validated config; one the config leaves out (it is off) reads as
    the schema's defaults, so that the rules can be defined whatever the config runs."""
    schema = _schema(str(schema_path))
    settings = {}
    for name in EXPERIMENTS:
        if config.get(name) is not None:
            settings[name] = config[name]
        else:
            settings[name] = {}
            _fill_defaults(settings[name], schema["properties"][name])
    return settings


def families_of(config: dict, dataset: str) -> list[str]:
    return sorted(f for f, members in config.get("families", {}).items() if dataset in members)
