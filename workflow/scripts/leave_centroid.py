from pathlib import Path

from weightspace.region import leave_centroid
from weightspace.workflow import run

run(
    snakemake,
    lambda: leave_centroid(Path(snakemake.input.centroid).parent, Path(snakemake.input.base).parent,
                           snakemake.input.stats, snakemake.wildcards.direction, snakemake.params.radius,
                           snakemake.params.seed, Path(snakemake.output.weights).parent),
)
