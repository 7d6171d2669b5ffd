from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.centroid.centres import build_centre

    build_centre(
        getattr(snakemake.wildcards, "centre", "centroid"),  # the centre rule's, or the centroid's
        snakemake.params.members,
        Path(snakemake.input.base).parent,
        Path(snakemake.output.weights).parent,
        snakemake.params.settings,
        command=f"snakemake --cores 1 {snakemake.output.weights}",
    )


run(snakemake, main)
