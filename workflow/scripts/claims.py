from weightspace.claims import write_claims
from weightspace.workflow import run

inputs = {name: snakemake.input[name] for name in snakemake.input.keys()}
run(snakemake, lambda: write_claims(inputs, snakemake.output.table, snakemake.output.markdown))
