# weightspace: where finetuned language models live in weight space (Gueta et al., 2023).
#   snakemake --cores 2                                   # the offline demo (config/demo.yaml)
#   snakemake --profile profiles/slurm                    # the paper's setup on a SLURM cluster
#   snakemake --cores 2 fig5_extrapolation                # one paper item and what it needs
#   snakemake --report results/report.html                # the HTML report of a finished run
# The README's table maps each paper item below to its rule and library function.
from snakemake.utils import min_version

min_version("9.19")



if not config:

    configfile: "config/demo.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/geometry.smk"
include: "workflow/rules/region.smk"
include: "workflow/rules/centroid.smk"
include: "workflow/rules/claims.smk"


report: "workflow/report/workflow.rst"


# -- one target per paper item; `all` builds those of the sections the config runs ---------------


rule finetune_scores:  # the finetuned models' test accuracy (App. A)
    input:
        paths.table("finetune", "md"),


rule fig2_tsne:  # Fig. 2, 7, 9: t-SNE of the task vectors, one figure per geometry experiment
    input:
        expand(paths.plot("tsne_{experiment}"), experiment=geometry_experiments()),


rule similarity_heatmaps:  # Fig. 8: cosine similarity of the task vectors
    input:
        expand(paths.plot("similarity_{experiment}"), experiment=geometry_experiments()),


rule table1_f1:  # §4, Table 1, App. B-D: clustering accuracy and per-group F1
    input:
        paths.table("clustering", "md"),


rule fig3_interpolation:  # §5.1, Fig. 3, 10: loss along the lines between pairs of models
    input:
        paths.plot("interpolation"),


rule fig4_pb:  # §5.2, Fig. 4: PB and the loss distributions of In, In' and Ex
    input:
        paths.table("pb", "md"),
        paths.plot("loss_distributions"),


rule fig5_extrapolation:  # §6, Fig. 5, 12: loss beyond the ends of the lines
    input:
        paths.plot("extrapolation"),


rule appF_leave_centroid:  # App. F, Fig. 11: moving away from In's centroid
    input:
        paths.plot("leave_centroid"),


rule table2_3_centroid:  # §7, Tables 2-3, Fig. 6, 14: BitFit / LoRA from the centroid
    input:
        paths.table("centroid", "md"),
        paths.plot("centroid_gain"),


rule paper_claims:  # every claim above checked against this run's tables by a stated rule
    input:
        paths.table("claims", "md"),


rule all:
    input:
        [getattr(rules, target).input for target in paper_targets()],
    default_target: True
