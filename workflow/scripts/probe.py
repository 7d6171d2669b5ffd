from pathlib import Path

from weightspace.io import write_parquet
from weightspace.models import torch_device
from weightspace.probing import probe
from weightspace.workflow import run

params = snakemake.params


def main():
    table = probe(Path(snakemake.input.weights).parent, Path(snakemake.input.base).parent, params.data_dirs, params.cfg,
                  torch_device(params.device), model_id=params.model, trust_remote_code=params.trust_remote_code)
    write_parquet(table, snakemake.output[0])


run(snakemake, main)
