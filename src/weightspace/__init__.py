"""weightspace: where finetuned language models live in weight space.

Shared core modules (io, checkpoints, data, models, finetuning, probing, taskvectors, similarity,
clustering, merging, intervals, plots), and one sub-package per experiment of the paper, each in
the same parts: `plan` (torch-free, imported when the Snakefile is parsed), the job steps, and
`report` (its tables and figures):

    geometry   §2.3, §4, App. B-D   plan, steps, report
    region     §3, §5, §6, App. E-G plan, points, report
    centroid   §7, App. H           plan, centres, train, report

`paths` spells every file the workflow writes and `paper` holds the paper's reported numbers.
"""

__version__ = "0.1.0"
