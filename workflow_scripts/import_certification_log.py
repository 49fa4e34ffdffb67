"""Rule import_certification_log: a published Cohen-format certification log, checked against
the slot's dataset (class count) and σ and restricted to the evaluation subset, as this
workflow's certify.tsv (rslib.certification.published_logs.import_certification_log). The evaluation indices come
from the dataset registry's test-split size, so a logs-only run downloads no dataset."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.certification.published_logs import import_certification_log
from rslib.data.registry import dataset_info, evaluation_indices
from rslib.runtime.io import write_json
from rslib.runtime.jobs import run_logged


def main():
    dataset, ev = snakemake.wildcards.dataset, snakemake.params.eval
    # ImageNet: the registry's 50,000 validation images, which published ImageNet logs index
    subset = evaluation_indices(dataset_info(dataset).test_images, ev["start"], ev["stride"], ev["count"])
    record = import_certification_log(snakemake.input.log, subset, snakemake.output.tsv, dataset=dataset,
                                      sigma=float(snakemake.wildcards.sigma))
    write_json(snakemake.output.provenance, {"published_log": record, "evaluation": dict(ev)})
    print(f"imported {record['rows']} of {record['rows_in_source']} rows from {record['source']}", file=sys.stderr)


run_logged(snakemake.log[0], main)
