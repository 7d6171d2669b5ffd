"""Validate a workflow config against the JSON schema and fill in its defaults.

Every problem is reported as one line naming the key and what was expected.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import yaml

from .errors import WeightspaceError


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise WeightspaceError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise WeightspaceError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return data or {}


def validated_config(config: dict, schema_path, source: str = "config") -> dict:
    """Return a copy of `config` with defaults filled in, or raise a one-line WeightspaceError."""
    schema = load_yaml(schema_path)
    config = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise WeightspaceError(f"{source}: {_describe(error)}")
    _fill_defaults(config, schema)
    _check_references(config, source)
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
    return f"key '{key}': {error.message}"


def _join(key: str, child: str) -> str:
    return child if key == "<top level>" else f"{key}.{child}"


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


def _check_references(config: dict, source: str) -> None:
    datasets = config["datasets"]
    for family, members in config.get("families", {}).items():
        for name in members:
            if name not in datasets:
                raise WeightspaceError(
                    f"{source}: key 'families.{family}' names dataset '{name}', "
                    f"which is not under 'datasets' (known: {', '.join(sorted(datasets))})"
                )
    if config["base_model"] not in config["models"]:
        raise WeightspaceError(
            f"{source}: key 'base_model' is '{config['base_model']}', expected one of "
            f"the names under 'models' ({', '.join(sorted(config['models']))})"
        )
    for name, spec in datasets.items():
        if spec["source"] in ("hf", "local"):
            for key in ("text_a", "label"):
                if not spec.get(key):
                    raise WeightspaceError(
                        f"{source}: dataset '{name}' (source {spec['source']}) needs key 'datasets.{name}.{key}'"
                    )
        if spec["source"] == "local" and "train" not in spec.get("files", {}):
            raise WeightspaceError(f"{source}: dataset '{name}' needs key 'datasets.{name}.files.train'")


def families_of(config: dict, dataset: str) -> list[str]:
    return sorted(f for f, members in config.get("families", {}).items() if dataset in members)
