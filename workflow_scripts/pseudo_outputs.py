"""Rule pseudo_outputs: one member's pseudo-model outputs (000 Alg. 2) for one shard of the
evaluation subset, for ensembles certified with per-point EsbRS weights."""

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
    from rslib.ensembles.outputs import compute_pseudo_outputs, save_pseudo_outputs
    from rslib.ensembles.schemes import member_key
    from rslib.runtime.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    subset = evaluation_subset(snakemake.input.data, params.eval)
    start, stop = shard_ranges(params.eval["count"], params.num_shards)[int(wc.shard)]
    device = resolve_device(params.device)
    # allow_code: the workflow's own model file, an imported TorchScript / builder network included
    model, _, _ = load_model(snakemake.input.model, dataset=wc.dataset, sigma=float(wc.sigma), device=device,
                             allow_code=True)
    pseudo = compute_pseudo_outputs(
        model, load_split(snakemake.input.data, "test"), subset[start:stop], params.noise_seed, float(wc.sigma),
        dict(params.perturbation, member_key=member_key(wc.method, int(wc.seed))), params.batch_size, device,
    )
    save_pseudo_outputs(snakemake.output[0], pseudo)
    print(f"pseudo-model outputs of {stop - start} images: {tuple(pseudo['perturbation'].shape)}")


run_logged(snakemake.log[0], main)
