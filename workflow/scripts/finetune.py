from pathlib import Path

from weightspace.workflow import run


def main():
    from weightspace.finetuning import finetune
    from weightspace.models import torch_device

    out = snakemake.output
    finetune(
        data_dir=Path(snakemake.input.meta).parent,
        base_dir=Path(snakemake.input.base).parent,
        out_dir=Path(out.weights).parent,
        metrics_path=out.metrics,
        dataset=snakemake.wildcards.dataset,
        seed=int(snakemake.wildcards.seed),
        cfg=snakemake.params.cfg,
        device=torch_device(snakemake.params.device),
        trust_remote_code=snakemake.params.trust_remote_code,
        max_train=getattr(snakemake.params, "max_train", None),
        base=getattr(snakemake.params, "base", None),
    )


run(snakemake, main)
