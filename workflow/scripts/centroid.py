from pathlib import Path

from weightspace.centres import build_centre
from weightspace.workflow import run

run(
    snakemake,
    lambda: build_centre(
        snakemake.params.kind,
        snakemake.params.members,
        Path(snakemake.input.base).parent,
        Path(snakemake.output.weights).parent,
        snakemake.params.settings,
    ),
)
