from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.finetuning import finetune
    from weightspace.models import torch_device

    out, w = snakemake.output, snakemake.wildcards
    finetune(
        data_dir=Path(snakemake.input.meta).parent,
        base_dir=Path(snakemake.input.base).parent,
        out_dir=Path(out.weights).parent,
        metrics_path=out.metrics,
        dataset=w.dataset,
        seed=int(w.seed),
        cfg=snakemake.params.cfg,
        device=torch_device(snakemake.params.device),
        trust_remote_code=snakemake.params.trust_remote_code,
        max_train=int(w.size) if hasattr(w, "size") else None,  # finetune_subsample
        base=getattr(w, "base", None),  # finetune_other_base
        command=f"snakemake --cores 1 {out.weights}",
    )


run(snakemake, main)
