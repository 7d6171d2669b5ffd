# §2.3, §4, App. B-D: task-vector similarity, spectral clustering, t-SNE and heatmaps, per
# experiment under `geometry.experiments`; App. C's subsample runs and App. B's other bases.
# On when the config has a `geometry:` section.
if config.get("geometry") is not None:
    from weightspace import geometry

    GEOMETRY = config["geometry"]
    EXPERIMENTS = geometry.experiment_names(config)

    rule finetune_subsample:
        conda:
            "../../envs/weightspace.yaml"
        input:
            unpack(lambda w: data_files(w.dataset)),
            base=f"{pretrained_dir()}/model.safetensors",
        output:
            weights="results/models/finetuned/{dataset}/n{size}/seed{seed}/model.safetensors",
            config="results/models/finetuned/{dataset}/n{size}/seed{seed}/config.json",
            metrics="results/metrics/finetune/{dataset}/n{size}/seed{seed}.parquet",
        params:
            cfg=config["finetune"],
            device=config["device"],
            trust_remote_code=config["trust_remote_code"],
            max_train=lambda w: int(w.size),
        wildcard_constraints:
            size=r"\d+",
        threads: config["threads"]
        resources:
            runtime=gpu_runtime(config["finetune"]["epochs"]),
        log:
            "logs/finetune/{dataset}/n{size}/seed{seed}.log",
        script:
            "../scripts/finetune.py"

    rule finetune_other_base:
        conda:
            "../../envs/weightspace.yaml"
        input:
            unpack(lambda w: data_files(w.dataset)),
            base="results/models/pretrained/{base}/model.safetensors",
        output:
            weights="results/models/finetuned/{dataset}/base-{base}/seed{seed}/model.safetensors",
            config="results/models/finetuned/{dataset}/base-{base}/seed{seed}/config.json",
            metrics="results/metrics/finetune/{dataset}/base-{base}/seed{seed}.parquet",
        params:
            cfg=config["finetune"],
            device=config["device"],
            trust_remote_code=config["trust_remote_code"],
            base=lambda w: w.base,
        threads: config["threads"]
        resources:
            runtime=gpu_runtime(config["finetune"]["epochs"]),
        log:
            "logs/finetune/{dataset}/base-{base}/seed{seed}.log",
        script:
            "../scripts/finetune.py"

    rule similarity:
        conda:
            "../../envs/weightspace.yaml"
        input:
            models=lambda w: geometry_models(w.experiment)["weights"],
            bases=lambda w: sorted(set(geometry_models(w.experiment)["pretrained"])),
        output:
            "results/metrics/similarity/{experiment}.parquet",
        params:
            members=lambda w: geometry_models(w.experiment)["records"],
            pretrained=lambda w: geometry_models(w.experiment)["pretrained"],
            reference=lambda w: geometry_models(w.experiment)["reference"],
            include_head=GEOMETRY["include_head"],
            memory_mb=GEOMETRY["memory_mb"],
            device=config["device"],
        wildcard_constraints:
            experiment="|".join(map(re.escape, EXPERIMENTS)) or "$^",
        threads: 4
        resources:
            mem_mb=int(GEOMETRY["memory_mb"]) + 3000,
            runtime=120,  # minutes: reads every model once (the paper's 240 roberta-bases: 120 GB)
        log:
            "logs/similarity/{experiment}.log",
        script:
            "../scripts/similarity.py"

    rule cluster:
        conda:
            "../../envs/weightspace.yaml"
        input:
            "results/metrics/similarity/{experiment}.parquet",
        output:
            summary="results/metrics/clustering/{experiment}.parquet",
            assignments="results/metrics/clustering/{experiment}.assignments.parquet",
            states="results/metrics/clustering/{experiment}.states.parquet",
        params:
            members=lambda w: geometry_models(w.experiment)["records"],
            group_by=lambda w: geometry.group_by(config, w.experiment),
            affinity=GEOMETRY["affinity"],
            euclidean_kernel=GEOMETRY["euclidean_kernel"],
            reference=lambda w: geometry.experiment_reference(config, w.experiment),
            seed=GEOMETRY["cluster_seed"],
            states=GEOMETRY["cluster_states"],
        wildcard_constraints:
            experiment="|".join(map(re.escape, EXPERIMENTS)) or "$^",
        log:
            "logs/cluster/{experiment}.log",
        localrule: True
        script:
            "../scripts/cluster.py"

    rule geometry_plots:
        conda:
            "../../envs/weightspace.yaml"
        input:
            similarity="results/metrics/similarity/{experiment}.parquet",
            assignments="results/metrics/clustering/{experiment}.assignments.parquet",
        output:
            tsne="results/plots/tsne_{experiment}.png",
            heatmap="results/plots/similarity_{experiment}.png",
        params:
            seed=GEOMETRY["cluster_seed"],
            perplexity=GEOMETRY["tsne_perplexity"],
        wildcard_constraints:
            experiment="|".join(map(re.escape, EXPERIMENTS)) or "$^",
        log:
            "logs/plots/geometry_{experiment}.log",
        localrule: True
        script:
            "../scripts/geometry_plots.py"

    rule clustering_table:
        conda:
            "../../envs/weightspace.yaml"
        input:
            expand("results/metrics/clustering/{experiment}.parquet", experiment=EXPERIMENTS),
        output:
            table="results/tables/clustering.parquet",
            markdown="results/tables/clustering.md",
        log:
            "logs/tables/clustering.log",
        localrule: True
        script:
            "../scripts/clustering_table.py"
