# Each base model of the config as a local folder of safetensors (from a hub id or a local folder).


rule pretrained:
    conda:
        ENVIRONMENT
    output:
        weights=pretrained_weights("{base}"),
        config=f"{paths.pretrained_dir('{base}')}/config.json",
    params:
        spec=model_spec,
        trust_remote_code=config["trust_remote_code"],
    log:
        "logs/pretrained/{base}.log",
    localrule: True
    script:
        "../scripts/pretrained.py"
