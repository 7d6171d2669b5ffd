from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.data import prepare_dataset

    prepare_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        snakemake.config["data"],
        Path(snakemake.output.meta).parent,
        families=snakemake.params.families,
        # the checkout's suite, found from this script: no absolute path in a param (a moved checkout reruns nothing)
        demo_dir=Path(snakemake.scriptdir).resolve().parents[1] / "resources/demo",
    )


run(snakemake, main)
