from weightspace.metrics import finetune_table
from weightspace.workflow import run

run(snakemake, lambda: finetune_table(snakemake.input.metrics, snakemake.output.table, snakemake.output.markdown))
