# §3, §5, §6, App. E-G: the region between similarly finetuned models. On when the config has a
# `region:` section. Every model the experiments evaluate has an id (weightspace.region_plan): its
# linear-probe losses are results/metrics/probe/{id}.parquet (one row per target). Finetuned models
# and centroids are on disk (a region centroid is temp()); the probe job builds every other model
# in memory from its recipe.
if config.get("region") is not None:
    from weightspace.region_plan import centroid_id
    from weightspace.region_plan import in_stats_paths

    REGION = region()
    REGION_CFG = config["region"]
    PROBE_CFG = {
        **REGION_CFG["probe"],
        "max_length": REGION_CFG["probe"]["max_length"] or config["finetune"]["max_length"],
    }
    GRANULARITY = "|".join(map(re.escape, REGION.granularities)) or "(?!)"
    NUMBER = r"-?\d+(?:\.\d+)?"

    rule region_centroid:
        conda:
            "../../envs/weightspace.yaml"
        input:
            members=lambda w: [region_weights(m) for m in region_recipe(centroid_id(w.granularity, w.set)).sources],
            base=f"{pretrained_dir()}/model.safetensors",
        output:
            weights=temp("results/models/region/{granularity}/centroid/{set}/model.safetensors"),
            config=temp("results/models/region/{granularity}/centroid/{set}/config.json"),
            stats="results/metrics/region/{granularity}/centroid/{set}.json",
        params:
            members=lambda w: list(region_recipe(centroid_id(w.granularity, w.set)).sources),
        wildcard_constraints:
            granularity=GRANULARITY,
            set="|".join(map(re.escape, ["in", *DATASETS])),
        log:
            "logs/region/{granularity}/centroid/{set}.log",
        script:
            "../scripts/region_centroid.py"

    # A finetuned model or a centroid is read from disk; every other model (line points, hull samples,
    # exterior perturbations, steps from the centroid) is built in memory from its recipe's sources.
    rule probe:
        conda:
            "../../envs/weightspace.yaml"
        input:
            sources=probe_sources,
            base=f"{pretrained_dir()}/model.safetensors",
            data=probe_data,
        output:
            probe_result("{model}"),
        params:
            model=probed_model,
            recipe=probe_recipe,
            data_dirs=lambda w: {t: str(Path(data_files(t)["meta"]).parent) for t in probe_targets(w)},
            cfg=PROBE_CFG,
            device=config["device"],
            trust_remote_code=config["trust_remote_code"],
        wildcard_constraints:
            model=r"(?!merged/).+",
        threads: REGION_CFG["threads"]
        resources:
            runtime=gpu_runtime(1 / 3),
        log:
            "logs/probe/{model}.log",
        script:
            "../scripts/probe.py"

    use rule probe as probe_line with:
        output:
            probe_result("merged/{granularity}/{pair}/alpha{alpha}"),
        wildcard_constraints:
            granularity=GRANULARITY,
            pair=r"[^/]+",
            alpha=NUMBER,
        # One cluster job per up to `group-components` points of a line (the profile's setting).
        group:
            "line_{granularity}_{pair}"
        log:
            "logs/probe/merged/{granularity}/{pair}/alpha{alpha}.log",

    rule region_tables:
        conda:
            "../../envs/weightspace.yaml"
        input:
            probes=[probe_result(m) for m in REGION.probe_ids()],
            stats=list(in_stats_paths(REGION).values()),
        output:
            losses="results/tables/region_losses.parquet",
            models="results/tables/region_models.parquet",
            pb="results/tables/pb.parquet",
            pb_md="results/tables/pb.md",
            lines="results/tables/lines.parquet",
            leave="results/tables/leave_centroid.parquet",
            effects="results/tables/region_effects.parquet",
        log:
            "logs/tables/region.log",
        localrule: True
        script:
            "../scripts/region_tables.py"

    rule region_plots:
        conda:
            "../../envs/weightspace.yaml"
        input:
            models="results/tables/region_models.parquet",
            lines="results/tables/lines.parquet",
            leave="results/tables/leave_centroid.parquet",
        output:
            interpolation="results/plots/interpolation.png",
            extrapolation="results/plots/extrapolation.png",
            distributions="results/plots/loss_distributions.png",
            leave="results/plots/leave_centroid.png",
        log:
            "logs/plots/region.log",
        localrule: True
        script:
            "../scripts/region_plots.py"
