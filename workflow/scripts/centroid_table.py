from weightspace.job import run


def main():
    from weightspace.centroid.report import centroid_table

    out = snakemake.output
    centroid_table(snakemake.input.metrics, out.table, out.runs, out.curves, out.markdown, snakemake.params.tolerance)


run(snakemake, main)
