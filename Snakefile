# weightspace: where finetuned language models live in weight space (Gueta et al., 2023).
#   snakemake --cores 2                                   # the offline demo (config/demo.yaml)
#   snakemake --profile profiles/slurm                    # the paper's setup on a SLURM cluster
from snakemake.utils import min_version

min_version("9.19")



if not config:

    configfile: "config/demo.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        all_targets(),
    default_target: True


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/centroid.smk"
include: "workflow/rules/region.smk"
include: "workflow/rules/geometry.smk"
include: "workflow/rules/claims.smk"
