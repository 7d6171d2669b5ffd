from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.models import save_base_model

    save_base_model(
        snakemake.wildcards.base,
        snakemake.params.spec,
        Path(snakemake.output.weights).parent,
        trust_remote_code=snakemake.params.trust_remote_code,
    )


run(snakemake, main)
