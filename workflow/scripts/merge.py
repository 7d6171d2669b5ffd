from pathlib import Path

from weightspace.merging import interpolate
from weightspace.workflow import run

w = snakemake.wildcards
run(
    snakemake,
    lambda: interpolate(snakemake.input.w1, snakemake.input.w2, float(w.alpha), Path(snakemake.input.base).parent,
                        Path(snakemake.output.weights).parent,
                        metadata={"w1": snakemake.params.ends[0], "w2": snakemake.params.ends[1]}),
)
