"""Rule comparison: paper values (paper/reported.csv) next to this run's for every regenerated
cell, with an interval and a verdict per cell and a summary line per table."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.report.comparison import write_comparison
from rslib.runtime.jobs import run_logged

run_logged(
    snakemake.log[0],
    lambda: write_comparison(
        snakemake.input.reported, list(snakemake.input.tables), snakemake.params.datasets,
        snakemake.output.md, snakemake.output.tex, snakemake.output.csv, snakemake.output.summary,
        time_tolerance=snakemake.params.time_tolerance, level=snakemake.params.level,
    ),
)
