from pathlib import Path

from weightspace.data import prepare_dataset
from weightspace.workflow import run

run(
    snakemake,
    lambda: prepare_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        snakemake.config["data"],
        Path(snakemake.output.meta).parent,
        families=snakemake.params.families,
        demo_dir=snakemake.params.demo_dir,
    ),
)
