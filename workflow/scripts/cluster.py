from weightspace.workflow import run


def main():
    from weightspace.geometry import cluster_step

    p, out = snakemake.params, snakemake.output
    cluster_step(snakemake.input[0], p.members, p.group_by, p.affinity, p.euclidean_kernel, p.reference, p.seed,
                 p.states, out.summary, out.assignments, out.states)


run(snakemake, main)
