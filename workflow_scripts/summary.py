"""Rule summary: certified accuracy / ACR table (LaTeX + CSV) and radius–accuracy figure."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.report.summaries import write_summary
from rslib.runtime.jobs import run_logged

params = snakemake.params

run_logged(
    snakemake.log[0],
    lambda: write_summary(
        models=list(params.models),
        certificates=list(snakemake.input.certificates),
        radii=list(params.radii),
        max_radius=float(params.max_radius),
        table=snakemake.output.table,
        csv=snakemake.output.csv,
        figure=snakemake.output.figure,
    ),
)
