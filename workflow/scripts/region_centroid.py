from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.region.points import group_stats

    group_stats(snakemake.input.members, Path(snakemake.input.base).parent, Path(snakemake.output.weights).parent,
                snakemake.output.stats, names=snakemake.params.members)


run(snakemake, main)
