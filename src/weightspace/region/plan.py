"""What the region experiments (config `region`) evaluate: every model, how it is made, its targets.

A model is named by its id (weightspace.paths: its folder under results/models/ and its probe
file under results/metrics/probe/). Only finetuned models and centroids are written to disk; the
probe job of any other model builds it in memory from its recipe. Each row of `Plan.rows` says how one model is used (granularity,
role, pair, alpha, radius, ...); the tables are those rows joined with the probe results. A
model's targets are the union over its rows, so a finetuned model used by several granularities
is probed once per target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations, product

import numpy as np

from .. import external
from ..errors import WeightspaceError
from ..paths import (ALPHA_DECIMALS, centroid_id, external_id, finetuned_id, format_alpha, leave_id, merged_id, sample_id,
                     stats_path, weights_path)
from ..seeding import run_seed

ROLES = ("in", "hull", "ex", "line", "centroid_line", "leave")
# The uses each part of the region tables is made from (report.region_tables): a figure's table
# needs only the probes of its models.
TABLE_ROLES = {"pb": ("in", "hull", "ex"), "lines": ("line", "centroid_line"), "leave": ("leave", "in"), "all": ROLES}


@dataclass(frozen=True)
class Recipe:
    """How a model is made: its kind, the model ids it is made from, and the numbers of the recipe."""

    kind: str
    sources: tuple[str, ...] = ()
    coefficients: tuple[float, ...] = ()
    seed: int | None = None
    stats: str | None = None  # id of the centroid whose statistics the recipe reads
    direction: str | None = None  # App. F: toward_origin, toward_pretrained or random<N>


@dataclass
class Granularity:
    name: str
    eval: list[str]
    in_models: list[str]
    ex_models: list[str]
    hull_models: list[str]
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # pair -> (w1, w2) model ids
    pair_targets: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Plan:
    models: dict[str, Recipe] = field(default_factory=dict)
    targets: dict[str, set[str]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    granularities: dict[str, Granularity] = field(default_factory=dict)

    def add(self, model: str, recipe: Recipe, targets, **row) -> None:
        if self.models.setdefault(model, recipe) != recipe:
            raise WeightspaceError(f"region: model '{model}' is planned with two different recipes")
        self.targets.setdefault(model, set()).update(targets)
        if row:
            self.rows.append({"model": model, **row, "targets": sorted(targets)})

    def probe_ids(self, roles=None) -> list[str]:
        """The models that are probed: all of them, or those with a use in `roles`."""
        plan = self if roles is None else self.only(roles)
        return sorted(m for m in plan.targets if plan.targets[m])

    def only(self, roles) -> "Plan":
        """The plan's uses in `roles`: their rows and the models they use."""
        rows = [r for r in self.rows if r["role"] in roles]
        used = {r["model"] for r in rows}
        return Plan({m: self.models[m] for m in used}, {m: self.targets[m] for m in used}, rows, self.granularities)








def extrapolation_alphas(steps: int, maximum: float) -> list[float]:
    """§6: `steps` log-spaced points beyond 1 up to `maximum`, mirrored below 0 down to 1 - maximum.

    "10 steps from 1 to 32" are the 10 points after 1 of an 11-point geometric grid (1.41, 2, ...,
    32). Rounded to 2 decimals (names stay short); 1 and 0 are the line's endpoints and belong to
    the interpolation grid.
    """
    if steps < 1:
        return []
    up = [round(float(a), 2) for a in np.geomspace(1.0, maximum, steps + 1)[1:]]
    return sorted({*up, *(round(1.0 - a, 2) for a in up)})


def line_alphas(cfg: dict, extrapolate: bool) -> list[float]:
    alphas = [float(a) for a in cfg["interpolation"]]
    for a in alphas:
        if float(format_alpha(a)) != a:
            raise WeightspaceError(f"region.interpolation: {a} has more than {ALPHA_DECIMALS} decimals")
    if extrapolate:
        alphas += extrapolation_alphas(cfg["extrapolation"]["steps"], cfg["extrapolation"]["max"])
    return sorted({float(format_alpha(a)) for a in alphas})


def region_plan(config: dict) -> Plan:
    """The plan of a validated config's `region` section (an empty plan when it has none)."""
    plan = Plan()
    cfg = config.get("region")
    if cfg is None:
        return plan
    for name, spec in cfg["granularities"].items():
        _plan_granularity(plan, config, cfg, name, spec)
    return plan


def _plan_granularity(plan: Plan, config: dict, cfg: dict, name: str, spec: dict) -> None:
    where = f"region.granularities.{name}"
    datasets = config["datasets"]
    finetune_seeds = config["finetune"]["seeds"]
    seeds = _seeds(spec.get("seeds") or cfg.get("seeds") or finetune_seeds, finetune_seeds, f"{where}.seeds")
    ex_seeds = _seeds(spec.get("ex_seeds") or seeds, finetune_seeds, f"{where}.ex_seeds")
    in_sets = _names(config, spec["in"], f"{where}.in")
    targets = _datasets(spec.get("eval") or [_target(config, n, f"{where}.in") for n in in_sets], datasets,
                        f"{where}.eval")
    if "in" in in_sets:
        raise WeightspaceError(f"{where}.in: a dataset named 'in' clashes with the name of In's centroid")

    in_models = [m for n in in_sets for _, m in _models(config, n, seeds)]
    for model in in_models:
        plan.add(model, Recipe("finetuned"), targets, granularity=name, role="in")
    in_centroid = centroid_id(name, "in")
    plan.add(in_centroid, Recipe("centroid", tuple(in_models)), ())

    ex_models = []
    if spec["ex"] == "random":
        for i in range(1, (spec.get("ex_random") or len(in_models)) + 1):
            model = sample_id(name, "perturbed", i)
            seed = run_seed(f"{name}/perturbed/{i}", cfg["seed"])
            plan.add(model, Recipe("perturbed", seed=seed, stats=in_centroid), targets, granularity=name, role="ex")
            ex_models.append(model)
    else:
        ex_sets = _names(config, spec["ex"], f"{where}.ex")
        overlap = sorted(set(ex_sets) & set(in_sets))
        if overlap:
            raise WeightspaceError(f"{where}: dataset '{overlap[0]}' is in both 'in' and 'ex'")
        for model in (m for n in ex_sets for _, m in _models(config, n, ex_seeds)):
            plan.add(model, Recipe("finetuned"), targets, granularity=name, role="ex")
            ex_models.append(model)

    hull_models = []
    if spec["hull"]:
        n = spec.get("hull_samples") or cfg.get("hull_samples") or len(in_models)
        coefficients = dirichlet_coefficients(len(in_models), n, run_seed(f"{name}/hull", cfg["seed"]))
        for i, row in enumerate(coefficients, start=1):
            model = sample_id(name, "hull", i)
            plan.add(model, Recipe("hull", tuple(in_models), tuple(float(c) for c in row)), targets,
                     granularity=name, role="hull")
            hull_models.append(model)

    granularity = Granularity(name, targets, in_models, ex_models, hull_models)
    plan.granularities[name] = granularity
    _plan_lines(plan, config, cfg, granularity, spec, seeds, where)
    if spec["leave"]:
        _plan_leave(plan, cfg, granularity, in_centroid)


def _plan_lines(plan: Plan, config: dict, cfg: dict, g: Granularity, spec: dict, seeds, where: str) -> None:
    alphas = line_alphas(cfg, spec["extrapolate"])
    for a, b in spec["pairs"]:
        _names(config, [a, b], f"{where}.pairs")
        if a == b and a not in config["datasets"]:
            raise WeightspaceError(f"{where}.pairs: [{a}, {a}] is one model (an external checkpoint), not a line")
        if "in" in (a, b):
            raise WeightspaceError(f"{where}.pairs: a dataset named 'in' clashes with the name of In's centroid")
        # Each pair is evaluated on its source datasets and on the rest of the granularity's targets.
        targets = [*dict.fromkeys([_target(config, a, f"{where}.pairs"), _target(config, b, f"{where}.pairs"),
                                   *g.eval])]
        ends_a, ends_b = _models(config, a, seeds), _models(config, b, seeds)
        ends = combinations(ends_a, 2) if a == b else product(ends_a, ends_b)
        for (label1, w1), (label2, w2) in ends:
            _plan_line(plan, g, f"{label1}--{label2}", w1, w2, alphas, targets, "line", (a, b))
        # With one seed a dataset's centroid is its model: the centroid line would repeat the pair's.
        if a != b and spec["centroid_line"] and len(seeds) > 1 and a in config["datasets"] and b in config["datasets"]:
            ends = []
            for d in (a, b):
                ends.append(centroid_id(g.name, d))
                plan.add(ends[-1], Recipe("centroid", tuple(finetuned_id(d, s) for s in seeds)), ())
            interpolation = [x for x in alphas if 0 <= x <= 1]
            _plan_line(plan, g, f"{a}.centroid--{b}.centroid", *ends, interpolation, targets, "centroid_line", (a, b))


def _plan_line(plan, g, pair, w1, w2, alphas, targets, role, datasets) -> None:
    g.pairs[pair] = (w1, w2)
    g.pair_targets[pair] = list(targets)
    for alpha in alphas:
        row = dict(granularity=g.name, role=role, pair=pair, dataset_a=datasets[0], dataset_b=datasets[1],
                   alpha=alpha)
        if alpha == 1 or alpha == 0:
            # The ends are the endpoint models themselves (merging them would copy them bit for bit).
            end = w1 if alpha == 1 else w2
            plan.add(end, plan.models.get(end, Recipe("finetuned")), targets, **row)
        else:
            model = merged_id(g.name, pair, alpha)
            plan.add(model, line_recipe(w1, w2, alpha), targets, **row)


def _plan_leave(plan: Plan, cfg: dict, g: Granularity, in_centroid: str) -> None:
    """App. F: the centroid, and steps from it toward the origin, the pretrained model and random directions.

    Toward the origin and in random directions a step is a radius (in In's mean distances from the
    centroid); toward the pretrained model it is a fraction of the segment that ends there, whose
    radius the tables compute from the centroid's statistics.
    """
    plan.add(in_centroid, plan.models[in_centroid], g.eval, granularity=g.name, role="leave",
             direction="centroid", radius=0.0)
    steps = [("toward_origin", "radius", r) for r in (cfg["radii"] if cfg["toward_origin"] else [])]
    steps += [("toward_pretrained", "fraction", t) for t in cfg["toward_pretrained"]]
    steps += [(f"random{i}", "radius", r) for i in range(1, cfg["random_directions"] + 1) for r in cfg["radii"]]
    for direction, key, step in steps:
        seed = run_seed(f"{g.name}/leave/{direction}", cfg["seed"]) if direction.startswith("random") else None
        model = leave_id(g.name, direction, step)
        plan.add(model, Recipe("leave", (in_centroid,), (float(step),), seed=seed, stats=in_centroid,
                               direction=direction),
                 g.eval, granularity=g.name, role="leave", direction=direction, **{key: float(step)})


def _seeds(seeds, finetune_seeds, where: str) -> list[int]:
    unknown = [s for s in seeds if s not in finetune_seeds]
    if unknown:
        raise WeightspaceError(f"{where}: seed {unknown[0]} is not in finetune.seeds ({finetune_seeds})")
    return list(seeds)


def _names(config: dict, names, where: str) -> list[str]:
    """Datasets and external checkpoints (of the config's base model), as a granularity lists them."""
    for name in names:
        if name not in config["datasets"]:
            if name not in (config.get("external") or {}):
                raise WeightspaceError(f"{where}: dataset '{name}' is not under 'datasets' (known: "
                                       f"{', '.join(sorted(config['datasets']))}) nor under 'external'")
            external.check_same_base(config, name, where, "the region")
    return list(dict.fromkeys(names))


def _models(config: dict, name: str, seeds) -> list[tuple[str, str]]:
    """(label in a pair's name, model id) of each model a listed name stands for: a dataset's seeds,
    or an external checkpoint."""
    if name in config["datasets"]:
        return [(f"{name}.seed{s}", finetuned_id(name, s)) for s in seeds]
    return [(name, external_id(name))]


def _target(config: dict, name: str, where: str) -> str:
    """The dataset a listed model is probed on: the dataset itself, or an external checkpoint's `dataset`."""
    if name in config["datasets"]:
        return name
    dataset = external.dataset_of(config, name)
    if dataset not in config["datasets"]:
        raise WeightspaceError(f"key '{where}': external '{name}' has no dataset of the config to be probed on: give "
                               f"'external.{name}.dataset' or the granularity's 'eval'")
    return dataset


def _datasets(names, datasets, where: str) -> list[str]:
    for d in names:
        if d not in datasets:
            raise WeightspaceError(f"{where}: dataset '{d}' is not under 'datasets' (known: {', '.join(sorted(datasets))})")
    return list(dict.fromkeys(names))




def dirichlet_coefficients(n_models: int, n_samples: int, seed: int) -> np.ndarray:
    """(n_samples, n_models) convex weights, each row a draw from Dirichlet(1, ..., 1).

    Dirichlet(1, ..., 1) is the uniform distribution on the simplex, so the samples are uniform in
    the convex hull's coefficient space (§5.2: "sampling |In| models uniformly from the region").
    """
    if n_models < 1 or n_samples < 1:
        raise WeightspaceError(f"hull: needs at least one model and one sample (got {n_models} and {n_samples})")
    return np.random.default_rng(seed).dirichlet(np.ones(n_models), size=n_samples)






def in_stats_paths(plan: Plan) -> dict[str, str]:
    return {g: stats_path(centroid_id(g, "in")) for g in plan.granularities}


def line_recipe(w1: str, w2: str, alpha) -> Recipe:
    return Recipe("merged", (w1, w2), (float(alpha),))


def recipe_files(model: str, recipe: Recipe) -> dict:
    """What the probe job of `model` reads to build it: the recipe with its model ids as weight files.

    Finetuned models and centroids are folders on disk (their own weights are the one source);
    every other kind is built in memory from its sources (weightspace.region.points.recipe_tensors).
    """
    on_disk = recipe.kind in ("finetuned", "centroid")
    return {"kind": recipe.kind, "sources": [weights_path(m) for m in ((model,) if on_disk else recipe.sources)],
            "coefficients": list(recipe.coefficients), "seed": recipe.seed, "direction": recipe.direction,
            "stats": stats_path(recipe.stats) if recipe.stats else None}
