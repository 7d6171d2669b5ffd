from weightspace.job import run


def main():
    from weightspace.geometry.steps import plots_step

    i, out = snakemake.input, snakemake.output
    plots_step(i.similarity, i.assignments, out.tsne, out.heatmap, snakemake.params.seed, snakemake.params.perplexity)


run(snakemake, main)
