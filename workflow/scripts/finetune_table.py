from weightspace.job import run


def main():
    from weightspace.finetune_report import finetune_table

    finetune_table(snakemake.input.metrics, snakemake.output.table, snakemake.output.markdown)


run(snakemake, main)
