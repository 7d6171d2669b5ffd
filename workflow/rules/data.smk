rule prepare_data:
    conda:
        "../../envs/weightspace.yaml"
    output:
        **data_files("{dataset}"),
    params:
        spec=lambda w: config["datasets"][w.dataset],
        data=config["data"],
        families=lambda w: families_of(config, w.dataset),
    log:
        "logs/prepare_data/{dataset}.log",
    localrule: True
    script:
        "../scripts/prepare_data.py"
