# Each dataset of the config, prepared once: results/data/{dataset}/{train,validation,test}.parquet
# and meta.json (labels, sizes, the majority-class baseline).


rule prepare_data:
    conda:
        ENVIRONMENT
    output:
        **paths.data_files("{dataset}"),
    params:
        spec=dataset_spec,
        data=config["data"],
        families=dataset_families,
    log:
        "logs/prepare_data/{dataset}.log",
    localrule: True
    script:
        "../scripts/prepare_data.py"
