"""Rule paper_table: one of the paper's Tables 1-8 from the workflow's certificates and timings."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.experiment.artefacts import Source
from rslib.report.tables import Uncertainty, write_table
from rslib.runtime.jobs import run_logged

params = snakemake.params
seeds = iter(snakemake.input.seeds)  # flat, per source in order: its further seeds' certificates

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
        seed_certificates=[[next(seeds) for _ in range(k)] for k in params.seed_counts],
        records=list(snakemake.input.records),
        member_records=list(snakemake.input.member_records),
        deviations=list(params.deviations),
        uncertainty=Uncertainty(**params.uncertainty),
    ),
)
