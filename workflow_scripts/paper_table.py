"""Rule paper_table: one of the paper's Tables 1-8 from the workflow's certificates and timings."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.paper_tables import Source, write_table
from rslib.workflow import run_logged

params = snakemake.params

run_logged(
    snakemake.log[0],
    lambda: write_table(
        snakemake.wildcards.table,
        [Source(**s) for s in params.sources],
        list(snakemake.input.certificates),
        list(snakemake.input.curves),
        list(params.hparams),
        [Source(**s) for s in params.members],
        list(snakemake.input.members),
        params.dataset,
        snakemake.output.tex,
        snakemake.output.csv,
    ),
)
