"""Rule certify: CERTIFY one shard (a contiguous range) of the evaluation subset."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime import provenance
from rslib.certification.certify import run_certification, shard_ranges
from rslib.runtime.io import write_json
from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params
settings = dict(params.settings)


def main():
    from rslib.runtime.devices import resolve_device

    if "outputs" in snakemake.input.keys():  # an ensemble member: its outputs hold CERTIFY's counts
        from rslib.ensembles.certify import certify_member_from_outputs
        from rslib.ensembles.outputs import load_outputs

        certify_member_from_outputs(load_outputs(snakemake.input.outputs), settings["alpha"], float(wc.sigma),
                                    snakemake.output.tsv)
        record = provenance.collect(resolve_device(params.device), settings)
        write_json(snakemake.output.provenance, {**record, "counts_from": snakemake.input.outputs})
        return
    subset = evaluation_subset(snakemake.input.data, params.eval)
    start, stop = shard_ranges(params.eval["count"], params.num_shards)[int(wc.shard)]
    run_certification(
        model_path=snakemake.input.model,
        data_meta=snakemake.input.data,
        dataset=wc.dataset,
        sigma=float(wc.sigma),
        indices=subset[start:stop],
        out_tsv=snakemake.output.tsv,
        n0=settings["n0"],
        n=settings["n"],
        alpha=settings["alpha"],
        batch_size=settings["batch_size"],
        noise_seed=params.noise_seed,
        device=params.device,
        autocast_bf16=settings["autocast_bf16"],
        threads=snakemake.threads,
        model_options={"allow_code": True},  # the workflow's own model file (an imported TorchScript network too)
    )
    write_json(snakemake.output.provenance, provenance.collect(resolve_device(params.device), settings))


run_logged(snakemake.log[0], main)
