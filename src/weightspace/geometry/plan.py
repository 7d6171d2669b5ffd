"""The config's `geometry.experiments`: which finetuned models each experiment compares, and
the groups (dataset, family, train size, base model) each model belongs to.

A model's path under results/models/finetuned/ is paths.finetuned_path: with a train size for a
run on a subsample (App. C), with a base for a run from another base model (App. B). The
checkpoints of the experiment's `external` list (the config's `external`) are members beside them,
named external/{name}.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import external
from ..errors import WeightspaceError
from ..paths import external_id, finetuned_path

GRANULARITIES = ("dataset", "family", "size", "base")
# What a model's weights are measured from: its own base, the first of the experiment's `bases`
# (the only one when it lists none), or zero (the raw weights).
REFERENCES = ("own_base", "first_base", "none")
DEFAULT_REFERENCE = "first_base"  # the schema's default; its description says why


@dataclass(frozen=True)
class Member:
    """One model of an experiment: finetuned by the workflow, or an external checkpoint."""

    dataset: str
    seed: int | None  # None: an external checkpoint
    family: str | None
    size: int | None  # None: the full training split
    base: str
    path: str  # its name in the tables: relative to results/models/finetuned/, or external/{name}
    external: bool = False

    @property
    def model_id(self) -> str:
        """Its folder under results/models/ (weightspace.paths)."""
        return self.path if self.external else f"finetuned/{self.path}"

    def group(self, granularity: str) -> str:
        if granularity == "size":
            return "full" if self.size is None else str(self.size)
        return str(getattr(self, granularity))

    def record(self) -> dict:
        return {"model": self.path, "dataset": self.dataset, "seed": self.seed, "family": self.family,
                "size": self.size, "base": self.base, "external": self.external}

    @classmethod
    def from_record(cls, record: dict) -> "Member":
        return cls(record["dataset"], record["seed"], record["family"], record["size"], record["base"],
                   record["model"], record.get("external", False))


def experiment_members(config: dict, name: str) -> list[Member]:
    """The models of experiment `name`, in (family, dataset, base, size, seed) order."""
    spec = _spec(config, name)
    where = f"geometry.experiments.{name}"
    families = _families(config, spec, where)
    datasets = spec.get("datasets") or list(dict.fromkeys(d for members in families.values() for d in members))
    for dataset in datasets:
        if dataset not in config["datasets"]:
            raise WeightspaceError(f"key '{where}.datasets' names dataset '{dataset}', which is not under 'datasets'")
    family_of = {}
    for family, members in families.items():
        for dataset in members:
            if dataset in family_of:
                raise WeightspaceError(
                    f"key '{where}.families': dataset '{dataset}' is in both '{family_of[dataset]}' and "
                    f"'{family}' (each model needs one group)"
                )
            family_of[dataset] = family
    if families:
        missing = [d for d in datasets if d not in family_of]
        if missing:
            raise WeightspaceError(f"key '{where}.families': dataset '{missing[0]}' is in none of them")
    seeds = spec.get("seeds") or config["finetune"]["seeds"]
    sizes = spec.get("sizes") or [None]
    bases = _bases(config, spec)
    for base in bases:
        if base not in config["models"]:
            raise WeightspaceError(f"key '{where}.bases' names model '{base}', which is not under 'models'")
    if len(sizes) > 1 and len(bases) > 1:
        raise WeightspaceError(f"key '{where}': give 'sizes' or 'bases', not both")
    members = [
        Member(d, s, family_of.get(d), n, b, finetuned_path(d, s, n, None if b == config["base_model"] else b))
        for d in datasets for b in bases for n in sizes for s in seeds
    ]
    members += [_external_member(config, name, family_of, bool(families), f"{where}.external")
                for name in spec.get("external") or []]
    _check_group_by(spec, members, where)
    return members


def _external_member(config: dict, name: str, family_of: dict, has_families: bool, where: str) -> Member:
    """An external checkpoint as a member: its group by dataset its `dataset`, by family the
    experiment's family of that dataset, else its own `family`."""
    spec = external.configured(config, name, where)
    dataset = external.dataset_of(config, name)
    family = family_of.get(dataset) or spec.get("family")
    if has_families and family is None:
        raise WeightspaceError(f"key '{where}': '{name}' has no family: give 'external.{name}.family', or a "
                               "'dataset' in one of the experiment's families")
    return Member(dataset, None, family, None, external.base_of(config, name), external_id(name), external=True)


def group_by(config: dict, name: str) -> list[str]:
    return list(_spec(config, name)["group_by"])


def experiment_reference(config: dict, name: str) -> str:
    """The experiment's `reference`, one of REFERENCES."""
    value = _spec(config, name).get("reference", DEFAULT_REFERENCE)
    if value not in REFERENCES:
        raise WeightspaceError(
            f"key 'geometry.experiments.{name}.reference': expected one of {', '.join(REFERENCES)}, got {value!r}"
        )
    return value


def reference_bases(config: dict, name: str) -> list[str | None]:
    """Per model of experiment_members(config, name), the base model its vector is taken against
    (None: no base, the raw weights)."""
    members = experiment_members(config, name)
    mode = experiment_reference(config, name)
    if mode == "none":
        return [None] * len(members)
    if mode == "own_base":
        return [m.base for m in members]
    return [_bases(config, _spec(config, name))[0]] * len(members)


def experiment_names(config: dict) -> list[str]:
    return sorted(config.get("geometry", {}).get("experiments", {}))


def check_experiments(config: dict) -> None:
    for name in experiment_names(config):
        experiment_members(config, name)
        experiment_reference(config, name)


def _spec(config: dict, name: str) -> dict:
    experiments = config.get("geometry", {}).get("experiments", {})
    if name not in experiments:
        raise WeightspaceError(f"no experiment '{name}' under 'geometry.experiments' (known: {', '.join(experiments)})")
    return experiments[name]


def _bases(config: dict, spec: dict) -> list[str]:
    return spec.get("bases") or [config["base_model"]]


def _families(config: dict, spec: dict, where: str) -> dict[str, list[str]]:
    """The experiment's groups: names of config families, or an explicit {group: [datasets]}."""
    families = spec.get("families") or {}
    if isinstance(families, dict):
        return {str(k): list(v) for k, v in families.items()}
    known = config.get("families", {})
    for family in families:
        if family not in known:
            raise WeightspaceError(
                f"key '{where}.families' names family '{family}', which is not under 'families' "
                f"(known: {', '.join(sorted(known))})"
            )
    return {f: list(known[f]) for f in families}


def _check_group_by(spec: dict, members: list[Member], where: str) -> None:
    if not spec.get("datasets") and not spec.get("families"):
        raise WeightspaceError(f"key '{where}': needs 'datasets' or 'families'")
    for granularity in spec["group_by"]:
        groups = {m.group(granularity) for m in members}
        if granularity == "family" and not spec.get("families"):
            raise WeightspaceError(f"key '{where}.group_by': 'family' needs 'families'")
        if len(groups) < 2:
            raise WeightspaceError(
                f"key '{where}.group_by': '{granularity}' gives {len(groups)} group ({', '.join(groups)}); "
                "clustering needs at least 2"
            )
        if len(groups) >= len(members):
            raise WeightspaceError(
                f"key '{where}.group_by': '{granularity}' gives {len(groups)} groups for {len(members)} models; "
                "clustering needs more models than groups (add seeds)"
            )
