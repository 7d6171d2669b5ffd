from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.external import import_external

    out = snakemake.output
    import_external(
        snakemake.wildcards.name,
        snakemake.params.spec,
        snakemake.params.base,
        Path(snakemake.input.base).parent,
        Path(out.weights).parent,
        trust_remote_code=snakemake.params.trust_remote_code,
        command=f"snakemake --cores 1 {out.weights}",
    )


run(snakemake, main)
