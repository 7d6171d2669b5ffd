from pathlib import Path

from weightspace.workflow import run


def main():
    from weightspace.region import group_stats

    group_stats(snakemake.input.members, Path(snakemake.input.base).parent, Path(snakemake.output.weights).parent,
                snakemake.output.stats, names=snakemake.params.members)


run(snakemake, main)
