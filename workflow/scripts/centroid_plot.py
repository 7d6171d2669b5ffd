from weightspace.job import run


def main():
    from weightspace.io import read_parquet
    from weightspace.centroid.report import centroid_gains

    centroid_gains(read_parquet(snakemake.input.table), snakemake.output[0], snakemake.params.tolerance)


run(snakemake, main)
