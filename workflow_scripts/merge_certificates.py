"""Rule merge_certificates: concatenate a model's shards (exactly the evaluation subset) and
join the provenance of the model and of every shard. A damaged shard is refused with its
file:line, the bad field and the command that recomputes it (rslib.runtime.errors.force_rebuild)."""

import json
import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime import provenance
from rslib.certification.tsv import read_certificates
from rslib.certification.certify import merge_shards
from rslib.models.checkpoint import read_checkpoint
from rslib.data.registry import dataset_info
from rslib.runtime.io import write_json
from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

params = snakemake.params


def main():
    subset = evaluation_subset(snakemake.input.data, params.eval)
    extra = read_checkpoint(snakemake.input.model).get("extra", {})  # a corrupt model fails before any output
    dataset = snakemake.wildcards.dataset
    classes = dataset_info(dataset, snakemake.config["datasets"][dataset]).num_classes
    merge_shards(snakemake.input.shards, snakemake.output.tsv, subset, classes=classes, dataset=dataset)
    write_json(
        snakemake.output.provenance,
        {
            "certify": dict(params.settings),
            "certify_config_hash": provenance.config_hash(dict(params.settings)),
            "certify_seconds": float(read_certificates(snakemake.output.tsv)["time"].sum()),
            "model": {"train_seconds": extra.get("train_seconds"), "provenance": extra.get("provenance"),
                      "imported": extra.get("imported")},
            "shards": [json.loads(open(p).read()) for p in snakemake.input.shard_provenance],
        },
    )


run_logged(snakemake.log[0], main)
