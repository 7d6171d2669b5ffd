rule finetune:
    conda:
        "../../envs/weightspace.yaml"
    input:
        unpack(lambda w: data_files(w.dataset)),
        base=f"{pretrained_dir()}/model.safetensors",
    output:
        weights=finetuned_weights("{dataset}", "{seed}"),
        config="results/models/finetuned/{dataset}/seed{seed}/config.json",
        metrics=finetune_metrics("{dataset}", "{seed}"),
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


rule finetune_table:
    conda:
        "../../envs/weightspace.yaml"
    input:
        metrics=[finetune_metrics(d, s) for d, s in finetune_grid()],
    output:
        table="results/tables/finetune.parquet",
        markdown="results/tables/finetune.md",
    log:
        "logs/tables/finetune.log",
    localrule: True
    script:
        "../scripts/finetune_table.py"
