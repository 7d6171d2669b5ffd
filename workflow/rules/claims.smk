# The paper's claims, each checked against the run's tables by a stated rule (weightspace.claims):
# results/tables/claims.{md,parquet}. Its inputs are the tables of the sections the config runs.


rule claims:
    conda:
        ENVIRONMENT
    input:
        unpack(claims_inputs),
    output:
        table=paths.table("claims"),
        markdown=report(
            paths.table("claims", "md"),
            caption="../report/claims.rst",
            category="Claims",
            labels={"item": "the paper's claims"},
        ),
    log:
        "logs/tables/claims.log",
    localrule: True
    script:
        "../scripts/claims.py"
