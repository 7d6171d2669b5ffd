from weightspace.job import run


def main():
    from weightspace.finetune_report import finetune_table

    out = snakemake.output
    finetune_table(snakemake.input.metrics, out.table, out.curves, out.markdown)


run(snakemake, main)
