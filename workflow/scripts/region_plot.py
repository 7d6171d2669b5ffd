from weightspace.job import run


def main():
    from weightspace.region.report import draw_figure

    draw_figure(snakemake.params.figure, snakemake.input[0], snakemake.output[0])


run(snakemake, main)
