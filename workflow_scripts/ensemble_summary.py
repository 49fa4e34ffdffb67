"""Rule ensemble_summary: ACR / certified accuracy of every ensemble and scheme, CertifyAdp results."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.report.summaries import write_ensemble_summary
from rslib.runtime.jobs import run_logged

params = snakemake.params

run_logged(
    snakemake.log[0],
    lambda: write_ensemble_summary(
        ensembles=list(params.ensembles),
        evaluation=list(params.evaluation),
        certificates=list(snakemake.input.certificates),
        adaptive=list(params.adaptive),
        adaptive_summaries=list(snakemake.input.adaptive),
        radii=list(params.radii),
        table=snakemake.output.table,
        csv=snakemake.output.csv,
        adaptive_csv=snakemake.output.adaptive,
    ),
)
