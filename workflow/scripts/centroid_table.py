from weightspace.efficient import centroid_table
from weightspace.workflow import run

out = snakemake.output
run(snakemake, lambda: centroid_table(snakemake.input.metrics, out.table, out.runs, out.markdown,
                                      snakemake.params.tolerance))
