from weightspace.job import run


def main():
    from weightspace.claims import write_claims

    inputs = {name: snakemake.input[name] for name in snakemake.input.keys()}
    write_claims(inputs, snakemake.output.table, snakemake.output.markdown)


run(snakemake, main)
