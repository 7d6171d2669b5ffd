from weightspace.workflow import run


def main():
    from weightspace import plots
    from weightspace.io import read_parquet

    out = snakemake.output
    lines = read_parquet(snakemake.input.lines)
    plots.region_lines(lines, out.interpolation)
    plots.region_lines(lines, out.extrapolation, extrapolation=True)
    plots.region_loss_distributions(read_parquet(snakemake.input.models), out.distributions)
    plots.region_leave(read_parquet(snakemake.input.leave), out.leave)


run(snakemake, main)
