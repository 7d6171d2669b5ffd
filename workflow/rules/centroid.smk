# §7, App. H: the leave-one-dataset-out centroid (and other centres) as the start of BitFit / LoRA
# (weightspace.centroid). Helpers: centre_members, efficient_start and efficient_metrics in common.smk.
CENTROID = SETTINGS["centroid"]
CENTROID_GROUP = one_of(centroid_plan.group_datasets(config))


rule centroid:
    conda:
        ENVIRONMENT
    input:
        members=centre_member_weights,
        base=pretrained_weights(),
    output:
        weights=f"{paths.centre_dir('centroid', '{target}')}/model.safetensors",
        config=f"{paths.centre_dir('centroid', '{target}')}/config.json",
    params:
        members=centre_members,
        settings=CENTROID,
    wildcard_constraints:
        target=CENTROID_GROUP,
    log:
        "logs/centroid/{target}.log",
    script:
        "../scripts/centroid.py"


# Beyond the paper: task arithmetic and TIES merges of the same models as other starts.
use rule centroid as centre with:
    output:
        weights=f"{paths.centre_dir('{centre}', '{target}')}/model.safetensors",
        config=f"{paths.centre_dir('{centre}', '{target}')}/config.json",
    wildcard_constraints:
        centre="task_arithmetic|ties",
        target=CENTROID_GROUP,
    log:
        "logs/centre/{centre}/{target}.log",


# One BitFit (the paper) or LoRA run (centroid.method) from a start, on one target.
rule efficient_finetune:
    conda:
        ENVIRONMENT
    input:
        unpack(target_files),
        start=efficient_start,
        base=pretrained_weights(),
    output:
        metrics=efficient_metrics("{target}", "{start}", "{shots}", "{seed}"),
    params:
        settings=CENTROID,
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
        runtime=gpu_runtime(CENTROID["train"]["epochs"] or config["finetune"]["epochs"]),
    log:
        f"logs/{CENTROID['method']}/{{target}}/{{start}}/{{shots}}/seed{{seed}}.log",
    script:
        "../scripts/efficient_finetune.py"


rule centroid_table:
    conda:
        ENVIRONMENT
    input:
        metrics=section_inputs("centroid", [efficient_metrics(*job) for job in centroid_plan.grid(config)]),
    output:
        table=paths.table("centroid"),
        runs=paths.table("centroid_runs"),
        curves=paths.table("centroid_curves"),
        markdown=report(
            paths.table("centroid", "md"),
            caption="../report/centroid.rst",
            category="Centroid",
            labels={"item": "Tables 2-3"},
        ),
    params:
        tolerance=CENTROID["tie_tolerance"],
    log:
        "logs/tables/centroid.log",
    localrule: True
    script:
        "../scripts/centroid_table.py"


rule centroid_plot:
    conda:
        ENVIRONMENT
    input:
        table=paths.table("centroid"),
    output:
        report(
            paths.plot("centroid_gain"),
            caption="../report/centroid_gain.rst",
            category="Centroid",
            labels={"item": "gains (Fig. 6, 14)"},
        ),
    params:
        tolerance=CENTROID["tie_tolerance"],
    log:
        "logs/plots/centroid_gain.log",
    localrule: True
    script:
        "../scripts/centroid_plot.py"
