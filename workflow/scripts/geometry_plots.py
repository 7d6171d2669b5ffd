from weightspace.geometry import plots_step
from weightspace.workflow import run

i, out = snakemake.input, snakemake.output
run(snakemake, lambda: plots_step(i.similarity, i.assignments, out.tsne, out.heatmap,
                                  snakemake.params.seed, snakemake.params.perplexity))
