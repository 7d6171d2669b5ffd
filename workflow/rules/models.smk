rule pretrained:
    conda:
        "../../envs/weightspace.yaml"
    output:
        weights="results/models/pretrained/{base}/model.safetensors",
        config="results/models/pretrained/{base}/config.json",
    params:
        spec=lambda w: config["models"][w.base],
        trust_remote_code=config["trust_remote_code"],
    log:
        "logs/pretrained/{base}.log",
    localrule: True
    script:
        "../scripts/pretrained.py"
