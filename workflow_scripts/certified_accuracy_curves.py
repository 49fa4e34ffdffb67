"""Rule certified_accuracy_curves: certified accuracy vs L2 radius of every model and ensemble at one (dataset, σ)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.report.figures import plot_certified_accuracy
from rslib.certification.tsv import read_certificates
from rslib.experiment.artefacts import Source
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    sources = [Source(**s) for s in params.sources]
    curves = {s.label: read_certificates(p) for s, p in zip(sources, snakemake.input.certificates)}
    plot_certified_accuracy({f"{wc.dataset}, σ={float(wc.sigma):.2f}": curves}, snakemake.output[0],
                            float(params.max_radius))


run_logged(snakemake.log[0], main)
