from pathlib import Path

from weightspace.workflow import run


def main():
    from weightspace.centres import build_centre

    build_centre(
        snakemake.params.kind,
        snakemake.params.members,
        Path(snakemake.input.base).parent,
        Path(snakemake.output.weights).parent,
        snakemake.params.settings,
    )


run(snakemake, main)
