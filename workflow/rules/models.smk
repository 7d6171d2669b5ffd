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


# Each checkpoint of the config's `external` (a model or a peft adapter folder, or a hub id) as a
# model folder of one safetensors file; an adapter is merged into its base (weightspace.external).
rule external_model:
    conda:
        ENVIRONMENT
    input:
        source=external_source_files,
        base=external_base_weights,
    output:
        weights=paths.weights_path(paths.external_id("{name}")),
        config=f"{paths.model_dir(paths.external_id('{name}'))}/config.json",
    params:
        spec=external_spec,
        base=external_base,
        trust_remote_code=config["trust_remote_code"],
    wildcard_constraints:
        name=one_of(config["external"]),
    log:
        "logs/external/{name}.log",
    localrule: True
    script:
        "../scripts/external_model.py"
