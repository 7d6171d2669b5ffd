from weightspace.workflow import run


def main():
    from weightspace.efficient import centroid_table

    out = snakemake.output
    centroid_table(snakemake.input.metrics, out.table, out.runs, out.markdown, snakemake.params.tolerance)


run(snakemake, main)
