from weightspace.geometry import cluster_step
from weightspace.workflow import run

p, out = snakemake.params, snakemake.output
run(snakemake, lambda: cluster_step(snakemake.input[0], p.members, p.group_by, p.affinity, p.euclidean_kernel,
                                    p.reference, p.seed, p.states, out.summary, out.assignments, out.states))
