"""Rule import_certification_log: a published Cohen-format certification log, restricted to the
evaluation subset, as this workflow's certify.tsv (rslib.analysis.import_certification_log)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.analysis import import_certification_log
from rslib.io import write_json
from rslib.workflow import evaluation_subset, run_logged


def main():
    subset = evaluation_subset(snakemake.input.data, snakemake.params.eval)
    record = import_certification_log(snakemake.input.log, subset, snakemake.output.tsv)
    write_json(snakemake.output.provenance, {"published_log": record, "evaluation": dict(snakemake.params.eval)})
    print(f"imported {record['rows']} of {record['rows_in_source']} rows from {record['source']}", file=sys.stderr)


run_logged(snakemake.log[0], main)
