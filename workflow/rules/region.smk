# §3, §5, §6, App. E-G: the region between similarly finetuned models (weightspace.region). Every
# model the experiments evaluate has an id (weightspace.paths): its linear-probe losses are
# results/metrics/probe/{id}.parquet, one row per target. Finetuned models and centroids are on
# disk (a region centroid is temp()); the probe job builds every other model in memory from its
# recipe.
REGION = SETTINGS["region"]
GRANULARITY = one_of(region().granularities)


rule region_centroid:
    conda:
        ENVIRONMENT
    input:
        members=region_centroid_weights,
        base=pretrained_weights(),
    output:
        weights=temp(paths.weights_path(paths.centroid_id("{granularity}", "{set}"))),
        config=temp(f"{paths.model_dir(paths.centroid_id('{granularity}', '{set}'))}/config.json"),
        stats=paths.stats_path(paths.centroid_id("{granularity}", "{set}")),
    params:
        members=region_centroid_members,
    wildcard_constraints:
        granularity=GRANULARITY,
        set=one_of(["in", *DATASETS]),
    log:
        "logs/region/{granularity}/centroid/{set}.log",
    script:
        "../scripts/region_centroid.py"


# A finetuned model or a centroid is read from disk; every other model (line points, hull samples,
# exterior perturbations, steps from the centroid) is built in memory from its recipe's sources.
rule probe:
    conda:
        ENVIRONMENT
    input:
        sources=probe_sources,
        base=pretrained_weights(),
        data=probe_data,
    output:
        paths.probe_result("{model}"),
    params:
        model=probed_model,
        recipe=probe_recipe,
        data_dirs=probe_data_dirs,
        cfg=probe_settings(),
        device=config["device"],
        trust_remote_code=config["trust_remote_code"],
    wildcard_constraints:
        model=r"(?!merged/).+",
    threads: REGION["threads"]
    resources:
        runtime=gpu_runtime(1 / 3),
    log:
        "logs/probe/{model}.log",
    script:
        "../scripts/probe.py"


use rule probe as probe_line with:
    output:
        paths.probe_result(paths.merged_id("{granularity}", "{pair}", "{alpha}")),
    wildcard_constraints:
        granularity=GRANULARITY,
        pair=r"[^/]+",
        alpha=r"-?\d+(?:\.\d+)?",
    # One cluster job per up to `group-components` points of a line (the profile's setting).
    group:
        "line_{granularity}_{pair}"
    log:
        "logs/probe/merged/{granularity}/{pair}/alpha{alpha}.log",


# Every probe, as the claims read them; each figure's table below reads only the probes of its models.
rule region_tables:
    conda:
        ENVIRONMENT
    input:
        probes=region_probes("all"),
        stats=region_stats(),
    output:
        losses=paths.table("region_losses"),
        effects=paths.table("region_effects"),
    params:
        part="all",
    log:
        "logs/tables/region.log",
    localrule: True
    script:
        "../scripts/region_tables.py"


use rule region_tables as region_pb with:
    input:
        probes=region_probes("pb"),
    output:
        pb=paths.table("pb"),
        pb_md=report(
            paths.table("pb", "md"),
            caption="../report/pb.rst",
            category="Region",
            labels={"item": "PB (§5.2)"},
        ),
        pb_models=paths.table("pb_models"),
    params:
        part="pb",
    log:
        "logs/tables/pb.log",


use rule region_tables as region_lines with:
    input:
        probes=region_probes("lines"),
    output:
        lines=paths.table("lines"),
        line_models=paths.table("line_models"),
    params:
        part="lines",
    log:
        "logs/tables/lines.log",


use rule region_tables as region_leave with:
    input:
        probes=region_probes("leave"),
        stats=region_stats(),
    output:
        leave=paths.table("leave_centroid"),
        leave_models=paths.table("leave_models"),
    params:
        part="leave",
    log:
        "logs/tables/leave_centroid.log",


rule interpolation_plot:
    conda:
        ENVIRONMENT
    input:
        paths.table("lines"),
    output:
        report(
            paths.plot("interpolation"),
            caption="../report/interpolation.rst",
            category="Region",
            labels={"item": "interpolation (Fig. 3, 10)"},
        ),
    params:
        figure="interpolation",
    log:
        "logs/plots/interpolation.log",
    localrule: True
    script:
        "../scripts/region_plot.py"


use rule interpolation_plot as extrapolation_plot with:
    output:
        report(
            paths.plot("extrapolation"),
            caption="../report/extrapolation.rst",
            category="Region",
            labels={"item": "extrapolation (Fig. 5, 12)"},
        ),
    params:
        figure="extrapolation",
    log:
        "logs/plots/extrapolation.log",


use rule interpolation_plot as loss_distributions_plot with:
    input:
        paths.table("pb_models"),
    output:
        report(
            paths.plot("loss_distributions"),
            caption="../report/loss_distributions.rst",
            category="Region",
            labels={"item": "loss distributions (Fig. 4)"},
        ),
    params:
        figure="loss_distributions",
    log:
        "logs/plots/loss_distributions.log",


use rule interpolation_plot as leave_centroid_plot with:
    input:
        paths.table("leave_centroid"),
    output:
        report(
            paths.plot("leave_centroid"),
            caption="../report/leave_centroid.rst",
            category="Region",
            labels={"item": "leaving the centroid (App. F, Fig. 11)"},
        ),
    params:
        figure="leave_centroid",
    log:
        "logs/plots/leave_centroid.log",
