from weightspace.workflow import run


def main():
    from weightspace.metrics import finetune_table

    finetune_table(snakemake.input.metrics, snakemake.output.table, snakemake.output.markdown)


run(snakemake, main)
