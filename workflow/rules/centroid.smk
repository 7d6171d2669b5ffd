# §7, App. H: the leave-one-dataset-out centroid (and other centres) as the start of BitFit / LoRA.
# On when the config has a `centroid:` section. Helpers: centroid_members, efficient_start and
# efficient_metrics in common.smk.
if config.get("centroid") is not None:
    from weightspace import centroid_plan

    CENTROID_GRID = centroid_plan.grid(config)
    CENTROID_GROUP = "|".join(map(re.escape, centroid_plan.group_datasets(config)))

    rule centroid:
        conda:
            "../../envs/weightspace.yaml"
        input:
            members=lambda w: sum(centroid_members(w.target).values(), []),
            base=f"{pretrained_dir()}/model.safetensors",
        output:
            weights="results/models/centroid/{target}/model.safetensors",
            config="results/models/centroid/{target}/config.json",
        params:
            kind="centroid",
            members=lambda w: centroid_members(w.target),
            settings=config["centroid"],
        wildcard_constraints:
            target=CENTROID_GROUP,
        log:
            "logs/centroid/{target}.log",
        script:
            "../scripts/centroid.py"

    rule centre:
        conda:
            "../../envs/weightspace.yaml"
        input:
            members=lambda w: sum(centroid_members(w.target).values(), []),
            base=f"{pretrained_dir()}/model.safetensors",
        output:
            weights="results/models/centre/{centre}/{target}/model.safetensors",
            config="results/models/centre/{centre}/{target}/config.json",
        params:
            kind=lambda w: w.centre,
            members=lambda w: centroid_members(w.target),
            settings=config["centroid"],
        wildcard_constraints:
            centre="task_arithmetic|ties",
            target=CENTROID_GROUP,
        log:
            "logs/centre/{centre}/{target}.log",
        script:
            "../scripts/centroid.py"

    # One efficient run; named bitfit after the paper, it trains LoRA when centroid.method is lora.
    rule bitfit:
        conda:
            "../../envs/weightspace.yaml"
        input:
            unpack(lambda w: data_files(w.target)),
            start=lambda w: efficient_start(w.start, w.target),
            base=f"{pretrained_dir()}/model.safetensors",
        output:
            metrics=efficient_metrics("{target}", "{start}", "{shots}", "{seed}"),
        params:
            settings=config["centroid"],
            finetune=config["finetune"],
            device=config["device"],
            trust_remote_code=config["trust_remote_code"],
        wildcard_constraints:
            target=CENTROID_GROUP,
            start="pretrained|centroid|task_arithmetic|ties",
            shots=r"full|\d+",
        threads: config["threads"]
        resources:
            # an upper bound for few-shot runs: the estimate counts the full training set
            runtime=gpu_runtime(config["centroid"]["train"]["epochs"] or config["finetune"]["epochs"]),
        log:
            f"logs/{config['centroid']['method']}/{{target}}/{{start}}/{{shots}}/seed{{seed}}.log",
        script:
            "../scripts/bitfit.py"

    rule centroid_table:
        conda:
            "../../envs/weightspace.yaml"
        input:
            metrics=[efficient_metrics(*job) for job in CENTROID_GRID],
        output:
            table="results/tables/centroid.parquet",
            runs="results/tables/centroid_runs.parquet",
            markdown="results/tables/centroid.md",
        params:
            tolerance=config["centroid"]["tie_tolerance"],
        log:
            "logs/tables/centroid.log",
        localrule: True
        script:
            "../scripts/centroid_table.py"

    rule centroid_plot:
        conda:
            "../../envs/weightspace.yaml"
        input:
            table="results/tables/centroid.parquet",
        output:
            "results/plots/centroid_gain.png",
        params:
            tolerance=config["centroid"]["tie_tolerance"],
        log:
            "logs/plots/centroid_gain.log",
        localrule: True
        script:
            "../scripts/centroid_plot.py"
