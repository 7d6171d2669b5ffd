from weightspace.job import run


def main():
    from weightspace.geometry.report import clustering_table

    clustering_table(snakemake.input, snakemake.output.table, snakemake.output.markdown)


run(snakemake, main)
