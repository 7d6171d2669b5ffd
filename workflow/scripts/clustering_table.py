from weightspace.geometry import clustering_table
from weightspace.workflow import run

run(snakemake, lambda: clustering_table(snakemake.input, snakemake.output.table, snakemake.output.markdown))
