from pathlib import Path

from weightspace.region import perturbed_pretrained
from weightspace.workflow import run

run(
    snakemake,
    lambda: perturbed_pretrained(Path(snakemake.input.base).parent, snakemake.input.stats, snakemake.params.seed,
                                 Path(snakemake.output.weights).parent),
)
