"""The paper's claims, each checked against this run's results by a stated rule.

One row per claim and scope (a granularity, an experiment, a shots setting): the run's number
with its 95% interval, the paper's number, the rule, and the verdict it gives (holds / does not
hold / cannot tell; intervals.verdict). Nothing here is written by hand: rerun the workflow and
the table follows the results. Two rows check the instrument first: a claim about losses is only
worth reading where the probe beats the training-label prior and loss and accuracy agree.

Inputs are the workflow's tables; a section the config does not run gives no rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .intervals import clustered_mean, format_interval, normal_interval, percentile_interval, verdict
from .io import gather, read_parquet, write_parquet, write_text
from .paper import CENTROID_START, CLUSTERING_ACCURACY
from .region.report import loss_accuracy_disagreements, paper_pb

COLUMNS = ["section", "claim", "scope", "statistic", "value", "lo", "hi", "digits", "units", "paper", "rule",
           "verdict"]


def claims_table(region_losses=None, region_effects=None, pb=None, clustering=None, clustering_states=None,
                 centroid_runs=None) -> pd.DataFrame:
    """Every claim the given tables can speak to (paths to the workflow's parquet files)."""
    rows = []
    effects = read_parquet(region_effects) if region_effects is not None else None
    if region_losses is not None:
        rows += instrument_rows(read_parquet(region_losses), effects)
    if clustering is not None:
        rows += clustering_rows(read_parquet(clustering), gather(clustering_states))
    if effects is not None:
        rows += interpolation_rows(effects) + extrapolation_rows(effects)
    if pb is not None:
        rows += pb_rows(read_parquet(pb))
    if effects is not None:
        rows += leave_rows(effects)
    if centroid_runs is not None:
        rows += centroid_rows(read_parquet(centroid_runs))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(section, claim, scope, statistic, value, lo, hi, digits, units, paper, rule, threshold, direction):
    return {"section": section, "claim": claim, "scope": scope, "statistic": statistic, "value": float(value),
            "lo": float(lo), "hi": float(hi), "digits": digits, "units": units, "paper": paper,
            "rule": rule, "verdict": verdict(lo, hi, threshold, direction)}


# -- the instrument ------------------------------------------------------------------------------

def instrument_rows(losses: pd.DataFrame, effects: pd.DataFrame) -> list[dict]:
    """No probe worse than the training-label prior, and loss and accuracy agreeing beyond the line ends.

    The first is a one-sided test per probe of (loss - prior loss) over its test examples, at a
    family-wise 5% over all probes (Bonferroni): with a hundred probes near the prior, a few would
    cross 1.96 standard errors by chance alone.
    """
    from scipy.stats import norm

    probes = losses.drop_duplicates(["model", "target"])
    z = probes["excess_over_prior"] / probes["excess_over_prior_se"].replace(0, np.nan)
    bound = float(norm.ppf(1 - 0.05 / len(probes)))
    worse = int((z > bound).sum())
    worst = probes.loc[z.idxmax()] if z.notna().any() else probes.iloc[0]
    rows = [{
        "section": "§3", "claim": "the probe's loss is no worse than predicting the training-label prior",
        "scope": "every probe", "statistic": f"probes above the prior by more than {bound:.2f} SE",
        "value": worse, "lo": np.nan, "hi": np.nan, "digits": 0,
        "units": f"{len(probes)} (model, target) probes (family-wise 5%); the closest: "
                 f"{worst['excess_over_prior']:+.4f} nats (z = {z.max():.2f}) for {worst['model']} on {worst['target']}",
        "paper": "-", "rule": "holds if no probe is", "verdict": "holds" if worse == 0 else "does not hold"}]
    beyond = effects[effects["comparison"] == "extrapolation"]
    if not beyond.empty:
        bad = loss_accuracy_disagreements(effects)
        rows.append({
            "section": "§6", "claim": "loss and accuracy agree in direction beyond the line ends",
            "scope": "every extrapolated point", "statistic": "points whose accuracy falls by more than 1 SE while "
            "the loss falls", "value": len(bad), "lo": np.nan, "hi": np.nan, "digits": 0,
            "units": f"{len(beyond)} (point, target) pairs", "paper": "-", "rule": "holds if none is",
            "verdict": "holds" if bad.empty else "does not hold"})
    return rows


# -- §4: clustering ------------------------------------------------------------------------------

CLUSTERING = {
    "dataset": ("§4, Fig. 2a", "models finetuned on the same dataset cluster together"),
    "family": ("§4, Fig. 2b", "models finetuned on datasets of the same task family cluster together"),
}


def clustering_rows(summary: pd.DataFrame, states: pd.DataFrame) -> list[dict]:
    rows = []
    cosine = summary[(summary.metric == "cosine") & summary.granularity.isin(list(CLUSTERING))]
    for r in cosine.itertuples():
        section, claim = CLUSTERING[r.granularity]
        paper = f"{CLUSTERING_ACCURACY[r.granularity]:g}"
        row = _row(section, claim, f"{r.experiment}, by {r.granularity} (k = {r.k})", "cosine clustering accuracy %",
                   100 * r.accuracy_mean, 100 * r.accuracy_lo, 100 * r.accuracy_hi, 1,
                   f"{r.models} models, {r.states} random states", f"{paper}%",
                   f"holds if the range over states is above shuffled groups' 95th percentile "
                   f"({100 * r.chance_accuracy:.1f}%)", 100 * r.chance_accuracy, "above")
        if r.chance_accuracy >= 1.0:  # so few models that shuffled groups often match perfectly
            row["verdict"] = "cannot tell"
        rows.append(row)
    for (experiment, granularity), df in states[states.granularity.isin(list(CLUSTERING))].groupby(
            ["experiment", "granularity"], sort=False):
        by_state = df.pivot(index="state", columns="metric", values="accuracy")
        gap = 100 * (by_state["cosine"] - by_state["euclidean"])
        lo, hi = percentile_interval(gap)
        rows.append(_row("§2.3", "Euclidean distance clusters worse than cosine similarity", f"{experiment}, by "
                         f"{granularity}", "accuracy % cosine - Euclidean", gap.mean(), lo, hi, 1,
                         f"{len(gap)} random states, paired", "Euclidean 'did not produce clear clusters'",
                         "holds if the range over states is above 0", 0.0, "above"))
    return rows


# -- §5.1, §6: lines -------------------------------------------------------------------------------

def _units_interval(effects: pd.DataFrame, units: str) -> tuple[float, float, float, str]:
    """Mean over `units` (the pairs or directions in column `unit`) of the mean over their targets.

    Its interval bootstraps the units, then the targets within them; with one unit and one
    target, it is the normal interval of the two probes' test-sample standard errors.
    """
    if len(effects) == 1:
        value = float(effects["dloss"].iloc[0])
        return (value, *normal_interval(value, float(effects["dloss_se"].iloc[0])), "1 point: test-sample SE")
    per_unit = [g["dloss"].to_numpy() for _, g in effects.groupby("unit", sort=False)]
    value, lo, hi = clustered_mean(per_unit)
    return value, lo, hi, f"{len(per_unit)} {units} x {effects['target'].nunique()} target(s), bootstrap"


def interpolation_rows(effects: pd.DataFrame) -> list[dict]:
    rows = []
    inside = effects[(effects.comparison == "interpolation") & (effects.role == "line")]
    for granularity, df in inside.groupby("granularity", sort=False):
        # one number per (pair, target): the mean over the interior alphas
        per = df.groupby(["unit", "target"], sort=False)[["dloss", "dloss_se"]].mean().reset_index()
        value, lo, hi, units = _units_interval(per, "pairs")
        rows.append(_row("§5.1, Fig. 3", "interpolated models are as good as or better than the line's ends",
                         granularity, "loss inside the line - mean loss of its ends (nats)", value, lo, hi, 3, units,
                         "below the ends' loss", "holds if the interval is below 0; does not hold if above",
                         0.0, "below"))
    return rows


def extrapolation_rows(effects: pd.DataFrame) -> list[dict]:
    rows = []
    beyond = effects[(effects.comparison == "extrapolation") & (effects.role == "line")]
    for granularity, df in beyond.groupby("granularity", sort=False):
        # the farthest alpha on each side of each line
        far = pd.concat([df[df.x > 1].loc[lambda d: d.x == d.x.max()], df[df.x < 0].loc[lambda d: d.x == d.x.min()]])
        value, lo, hi, units = _units_interval(far, "pairs")
        dacc = far["dacc"].mean()
        alphas = ", ".join(f"{a:g}" for a in sorted(far.x.unique()))
        rows.append(_row("§6, Fig. 5", "the loss rises beyond the line's ends", granularity,
                         f"loss at alpha {alphas} - loss at the nearer end (nats)", value, lo, hi, 3,
                         f"{units}; accuracy {100 * dacc:+.1f} points", "rises 'rapidly'",
                         "holds if the interval is above 0", 0.0, "above"))
    return rows


# -- §5.2: PB --------------------------------------------------------------------------------------

PB_CLAIMS = [
    (("in", "ex"), "In's models have a lower loss than Ex's", "PB(In, Ex) %", 50.0, "above 50"),
    (("hull", "ex"), "the hull's samples (In') have a lower loss than Ex's", "PB(In', Ex) %", 90.0, "above 90"),
    (("hull", "in"), "the hull's samples (In') have a lower loss than In's own models", "PB(In', In) %", 50.0,
     "above 50"),
]


def pb_rows(pb: pd.DataFrame) -> list[dict]:
    """`pb` is region.report.pb_table: a row per (granularity, A, B)."""
    rows = []
    sizes = group_sizes(pb)
    for (a, b), claim, statistic, threshold, rule in PB_CLAIMS:
        for r in pb[(pb.a == a) & (pb.b == b)].itertuples():
            n = sizes[r.granularity]
            paper = paper_pb(r.granularity, a, b)
            rows.append(_row("§5.2, Fig. 4", claim, r.granularity, statistic, r.pb, r.pb_lo, r.pb_hi, 1,
                             f"|In| {n.get('in', 0)}, |In'| {n.get('hull', 0)}, |Ex| {n.get('ex', 0)}; "
                             "bootstrap over models", "-" if pd.isna(paper) else f"{paper:g}",
                             f"holds if the interval is {rule}", threshold, "above"))
    return rows


def group_sizes(pb: pd.DataFrame) -> dict[str, dict[str, int]]:
    """The models of each PB group (in, hull, ex) per granularity, as the PB rows count them."""
    sizes = {}
    for r in pb.itertuples():
        sizes.setdefault(r.granularity, {}).update({r.a: int(r.n_a), r.b: int(r.n_b)})
    return sizes


# -- App. F: leaving the centroid ------------------------------------------------------------------

TOWARD_ORIGIN = "toward the origin the loss rises less than in random directions"
TOWARD_ORIGIN_PAPER = "'towards the origin' performance stays near the finetuned models'"


def leave_rows(effects: pd.DataFrame) -> list[dict]:
    rows = []
    leave = effects[effects.comparison == "leave"]
    for granularity, df in leave.groupby("granularity", sort=False):
        random = df[df.role.str.startswith("random")]
        if random.empty:
            continue
        far = random[random.x == random.x.max()]
        value, lo, hi, units = _units_interval(far, "directions")
        rows.append(_row("App. F, Fig. 11", "the loss rises with the distance from In's centroid in random directions",
                         granularity, f"loss at {far.x.iloc[0]:g} mean distances - the centroid's (nats)", value, lo,
                         hi, 3, units, "rises", "holds if the interval is above 0", 0.0, "above"))
        toward = df[df.role == "toward_origin"]
        common = sorted(set(toward.x) & set(random.x))
        if not common:
            continue
        radius = common[-1]
        random_at = random[random.x == radius].groupby("target")[["dloss", "dloss_se"]].mean()
        toward_at = toward[toward.x == radius].set_index("target")[["dloss", "dloss_se"]]
        gaps = pd.DataFrame({"unit": "random - toward the origin", "target": toward_at.index,
                             "dloss": random_at["dloss"].reindex(toward_at.index) - toward_at["dloss"],
                             "dloss_se": np.hypot(random_at["dloss_se"].reindex(toward_at.index),
                                                  toward_at["dloss_se"])}).dropna()
        value, lo, hi, units = _units_interval(gaps, "paired comparison")
        rows.append(_row("App. F, Fig. 11", TOWARD_ORIGIN, granularity,
                         f"random - toward-origin loss change at {radius:g} mean distances (nats)", value, lo, hi,
                         3, f"{units}; toward the origin {toward_at['dloss'].mean():+.3f}", TOWARD_ORIGIN_PAPER,
                         "holds if the interval is above 0", 0.0, "above"))
    return rows


# -- §7: the centroid as a starting point ----------------------------------------------------------

def centroid_rows(runs: pd.DataFrame) -> list[dict]:
    rows = []
    part = runs[runs.start == "centroid"]
    for shots, df in part.groupby("shots", sort=False, dropna=False):
        full = pd.isna(shots)  # <NA>: the full training set
        by_target = [g.to_numpy() for _, g in df.groupby("target")["gain"]]
        value, lo, hi = clustered_mean(by_target)
        method = df["method"].iloc[0]
        rows.append(_row("§7, Table 2" if full else "§7, Table 3",
                         f"{'BitFit' if method == 'bitfit' else 'LoRA'} from the centroid of the other datasets' "
                         "models beats the pretrained start", "full training set" if full else f"{shots} examples",
                         "accuracy gain, points (mean over targets)", value, lo, hi, 2,
                         f"{len(by_target)} targets x {df.seed.nunique()} seed(s), bootstrap over both",
                         f"{CENTROID_START['full']['mean_gain']:+.2f}" if full
                         else f"{CENTROID_START['few']['mean_gain']:+.2f} (1K examples)", "holds if the interval is above 0", 0.0,
                         "above"))
    return rows


# -- output ----------------------------------------------------------------------------------------

def claims_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# The paper's claims, checked against this run",
        "",
        "Generated from the results by `weightspace.claims`. Each number carries its 95% interval (the `units` "
        "column says over what); the verdict applies the stated rule to the interval: holds, does not hold, or "
        "cannot tell where the interval straddles the threshold. Losses are the linear probe's test "
        "cross-entropy (§3).",
        "",
        "| § | claim | scope | statistic | this run [95% interval] | over | paper | rule | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        value = format_interval(r.value, r.lo, r.hi, int(r.digits))
        lines.append(f"| {r.section} | {r.claim} | {r.scope} | {r.statistic} | {value} | {r.units} | {r.paper} | "
                     f"{r.rule} | **{r.verdict}** |")
    counts = table["verdict"].value_counts()
    lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "does not hold", "cannot tell")) + "."]
    return "\n".join(lines) + "\n"


def write_claims(inputs: dict, table_path, markdown_path) -> pd.DataFrame:
    """`inputs` maps claims_table's argument names to paths (a list for clustering_states)."""
    table = claims_table(**inputs)
    write_parquet(table, Path(table_path))
    write_text(claims_markdown(table), markdown_path)
    return table
