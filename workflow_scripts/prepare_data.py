"""Rule prepare_data: download/prepare one dataset into data/<dataset>/."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.data.prepare import prepare_dataset
from rslib.runtime.jobs import run_logged

output_dir = snakemake.output.meta.rsplit("/", 2)[0]

run_logged(
    snakemake.log[0],
    lambda: prepare_dataset(snakemake.wildcards.dataset, output_dir, source=dict(snakemake.params.source)),
)
