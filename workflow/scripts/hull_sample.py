from pathlib import Path

from weightspace.region import hull_sample
from weightspace.workflow import run

run(
    snakemake,
    lambda: hull_sample(snakemake.input.members, snakemake.params.coefficients, Path(snakemake.input.base).parent,
                        Path(snakemake.output.weights).parent),
)
