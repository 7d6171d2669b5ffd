# §2: the base model finetuned on every dataset x seed, and the finetuning table. App. C's runs on
# subsamples and App. B's runs from other bases are the same rule on other paths.


rule finetune:
    conda:
        ENVIRONMENT
    input:
        unpack(dataset_files),
        base=pretrained_weights(),
    output:
        weights=finetuned_weights(paths.finetuned_path("{dataset}", "{seed}")),
        config=finetuned_config(paths.finetuned_path("{dataset}", "{seed}")),
        metrics=paths.finetune_metrics(paths.finetuned_path("{dataset}", "{seed}")),
    params:
        cfg=config["finetune"],
        device=config["device"],
        trust_remote_code=config["trust_remote_code"],
    threads: config["threads"]
    resources:
        runtime=gpu_runtime(config["finetune"]["epochs"]),
    log:
        "logs/finetune/{dataset}/seed{seed}.log",
    script:
        "../scripts/finetune.py"


# App. C: trained on the first {size} examples of one fixed shuffle of the training split.
use rule finetune as finetune_subsample with:
    output:
        weights=finetuned_weights(paths.finetuned_path("{dataset}", "{seed}", size="{size}")),
        config=finetuned_config(paths.finetuned_path("{dataset}", "{seed}", size="{size}")),
        metrics=paths.finetune_metrics(paths.finetuned_path("{dataset}", "{seed}", size="{size}")),
    wildcard_constraints:
        size=r"\d+",
    log:
        "logs/finetune/{dataset}/n{size}/seed{seed}.log",


# App. B: finetuned from another base model of the config.
use rule finetune as finetune_other_base with:
    input:
        unpack(dataset_files),
        base=pretrained_weights("{base}"),
    output:
        weights=finetuned_weights(paths.finetuned_path("{dataset}", "{seed}", base="{base}")),
        config=finetuned_config(paths.finetuned_path("{dataset}", "{seed}", base="{base}")),
        metrics=paths.finetune_metrics(paths.finetuned_path("{dataset}", "{seed}", base="{base}")),
    log:
        "logs/finetune/{dataset}/base-{base}/seed{seed}.log",


rule finetune_table:
    conda:
        ENVIRONMENT
    input:
        metrics=finetune_metrics_files(),
    output:
        table=paths.table("finetune"),
        curves=paths.table("finetune_curves"),
        markdown=report(
            paths.table("finetune", "md"),
            caption="../report/finetune.rst",
            category="Finetuning",
            labels={"item": "finetuning scores"},
        ),
    log:
        "logs/tables/finetune.log",
    localrule: True
    script:
        "../scripts/finetune_table.py"
