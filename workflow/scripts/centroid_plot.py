from weightspace.io import read_parquet
from weightspace.plots import centroid_gains
from weightspace.workflow import run

run(snakemake, lambda: centroid_gains(read_parquet(snakemake.input.table), snakemake.output[0],
                                      snakemake.params.tolerance))
