"""Rule import_model: a released checkpoint (Cohen / SmoothAdv / MACER / Consistency / SmoothMix
layout) as an rslib model file for its grid slot (rslib.released)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib import provenance
from rslib.released import import_released
from rslib.workflow import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    record = import_released(
        snakemake.input.released,
        params.format,
        snakemake.output.model,
        dataset=wc.dataset,
        arch=params.arch,
        sigma=float(wc.sigma),
        method=wc.method,
        seed=int(wc.seed),
        input_layer=params.input_layer,
        provenance=provenance.collect("cpu", {"format": params.format, "input_layer": params.input_layer}),
    )
    print(f"imported {record['source']} ({record['format']}, input layer {record['input_layer']}, "
          f"sha256 {record['sha256'][:12]}…) as {snakemake.output.model}", file=sys.stderr)


run_logged(snakemake.log[0], main)
