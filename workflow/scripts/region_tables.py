from weightspace.workflow import run


def main():
    from weightspace.region_plan import in_stats_paths, region_plan
    from weightspace.region_report import region_tables

    plan = region_plan(snakemake.config)
    region_tables(plan, snakemake.input.probes, in_stats_paths(plan), dict(snakemake.output.items()))


run(snakemake, main)
