from weightspace.job import run


def main():
    from weightspace.geometry.steps import cluster_step

    p, out = snakemake.params, snakemake.output
    cluster_step(snakemake.input[0], p.members, p.grouping["group_by"], p.affinity, p.euclidean_kernel,
                 p.grouping["reference"], p.seed, p.states, out.summary, out.assignments, out.states,
                 out.f1)


run(snakemake, main)
