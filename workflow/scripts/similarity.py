from weightspace.workflow import run


def main():
    from weightspace.geometry import similarity_step
    from weightspace.models import torch_device

    p = snakemake.params
    similarity_step(p.members, snakemake.input.models, p.pretrained, p.reference, snakemake.output[0],
                    p.include_head, p.memory_mb, torch_device(p.device))


run(snakemake, main)
