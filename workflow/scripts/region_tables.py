from weightspace.job import run


def main():
    from weightspace.region.plan import in_stats_paths, region_plan
    from weightspace.region.report import region_tables

    plan = region_plan(snakemake.config)
    stats = in_stats_paths(plan) if snakemake.input.get("stats") else {}
    region_tables(plan, snakemake.input.probes, stats, dict(snakemake.output.items()), snakemake.params.part)


run(snakemake, main)
