"""Rule member_outputs: one member's logits (and class counts) on CERTIFY's noise for one shard of
the evaluation subset, stored for every ensemble and for the member's own certificate."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    import torch

    from rslib.certification.certify import shard_ranges
    from rslib.models.checkpoint import load_model
    from rslib.data.load import load_split
    from rslib.ensembles.outputs import compute_member_outputs, save_outputs
    from rslib.runtime.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    settings = params.settings
    subset = evaluation_subset(snakemake.input.data, params.eval)
    start, stop = shard_ranges(params.eval["count"], params.num_shards)[int(wc.shard)]
    device = resolve_device(params.device)
    # allow_code: the workflow's own model file, an imported TorchScript / builder network included
    model, _, _ = load_model(snakemake.input.model, dataset=wc.dataset, sigma=float(wc.sigma), device=device,
                             allow_code=True)
    outputs = compute_member_outputs(
        model, load_split(snakemake.input.data, "test"), subset[start:stop],
        n0=settings["n0"], n=settings["n"], batch_size=settings["batch_size"],
        noise_seed=params.noise_seed, sigma=float(wc.sigma), device=device, dtype=getattr(torch, params.dtype),
    )
    save_outputs(snakemake.output[0], outputs)


run_logged(snakemake.log[0], main)
