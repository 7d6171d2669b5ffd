from pathlib import Path

from weightspace.job import run


def main():
    from weightspace.io import write_parquet
    from weightspace.models import torch_device
    from weightspace.probing import probe
    from weightspace.region.points import recipe_tensors

    params = snakemake.params
    base = Path(snakemake.input.base).parent
    tensors = recipe_tensors(params.recipe, base)
    model_dir = base if tensors is not None else Path(params.recipe["sources"][0]).parent
    table = probe(model_dir, base, params.data_dirs, params.cfg, torch_device(params.device), model_id=params.model,
                  trust_remote_code=params.trust_remote_code, tensors=tensors)
    write_parquet(table, snakemake.output[0])


run(snakemake, main)
