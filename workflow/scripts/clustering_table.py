from weightspace.job import run


def main():
    from weightspace.geometry.report import clustering_table

    inp, out = snakemake.input, snakemake.output
    clustering_table(inp.summaries, inp.f1, out.table, out.f1, out.markdown)


run(snakemake, main)
