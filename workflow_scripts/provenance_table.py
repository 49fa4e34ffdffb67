"""Rule provenance_table: configuration hash, rslib version and commit, torch, devices and times of every result."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime.io import atomic_path
from rslib.report.summaries import provenance_table
from rslib.runtime.jobs import run_logged


def main():
    table = provenance_table(list(snakemake.input.models), list(snakemake.input.ensembles))
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, index=False)


run_logged(snakemake.log[0], main)
