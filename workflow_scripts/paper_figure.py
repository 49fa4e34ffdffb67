"""Rule paper_figure: Figure 1 (best ACR vs training hours) or Figure 3 (ACR vs ensemble size)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.experiment.artefacts import Source
from rslib.report.figures import write_figure
from rslib.runtime.jobs import run_logged

params = snakemake.params

run_logged(
    snakemake.log[0],
    lambda: write_figure(
        snakemake.wildcards.figure,
        [Source(**s) for s in params.sources],
        list(snakemake.input.certificates),
        list(snakemake.input.curves),
        params.sigma,
        snakemake.output.pdf,
        snakemake.output.csv,
    ),
)
