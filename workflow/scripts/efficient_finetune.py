from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.centroid.train import efficient_finetune
    from weightspace.models import torch_device

    w = snakemake.wildcards
    efficient_finetune(
        data_dir=Path(snakemake.input.meta).parent,
        start_dir=Path(snakemake.input.start).parent,
        tokenizer_dir=Path(snakemake.input.base).parent,
        metrics_path=snakemake.output.metrics,
        target=w.target,
        start=w.start,
        shots=w.shots,
        seed=int(w.seed),
        settings=snakemake.params.settings,
        finetune_cfg=snakemake.params.finetune,
        device=torch_device(snakemake.params.device),
        trust_remote_code=snakemake.params.trust_remote_code,
    )


run(snakemake, main)
