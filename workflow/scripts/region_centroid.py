from pathlib import Path

from weightspace.region import group_stats
from weightspace.workflow import run

run(
    snakemake,
    lambda: group_stats(snakemake.input.members, Path(snakemake.input.base).parent,
                        Path(snakemake.output.weights).parent, snakemake.output.stats, names=snakemake.params.members),
)
