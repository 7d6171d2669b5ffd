from weightspace.job import run


def main():
    from weightspace.geometry.steps import similarity_step
    from weightspace.models import torch_device

    p = snakemake.params
    similarity_step(p.models["records"], snakemake.input.models, p.models["pretrained"], p.models["reference"],
                    snakemake.output[0], p.include_head, p.memory_mb, torch_device(p.device))


run(snakemake, main)
