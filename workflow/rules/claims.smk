# The paper's claims, each checked against the run's tables by a stated rule (weightspace.claims):
# results/tables/claims.{md,parquet}. Its inputs are the tables of the sections the config runs.


rule claims:
    conda:
        "../../envs/weightspace.yaml"
    input:
        unpack(claims_inputs),
    output:
        table="results/tables/claims.parquet",
        markdown="results/tables/claims.md",
    log:
        "logs/tables/claims.log",
    localrule: True
    script:
        "../scripts/claims.py"
