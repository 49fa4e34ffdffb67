"""Rule fit_ensemble_weights: weights fitted once on held-out training images (EsbRS "global"
optimal weights, SWEEN weights) for one ensemble."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    import time

    import torch

    from rslib.runtime import provenance
    from rslib.models.checkpoint import load_model
    from rslib.data.load import heldout_split, load_split
    from rslib.ensembles.certify import fit_weights
    from rslib.runtime.io import write_json
    from rslib.runtime.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    device = resolve_device(params.device)
    # allow_code: the workflow's own model files, imported TorchScript / builder networks included
    members = [load_model(p, dataset=wc.dataset, sigma=float(wc.sigma), device=device, allow_code=True)[0]
               for p in snakemake.input.models]
    train = load_split(snakemake.input.data, "train")
    _, held = heldout_split(len(train), int(params.heldout))
    images = torch.stack([train[i][0] for i in held])
    labels = torch.tensor([train[i][1] for i in held])
    started = time.perf_counter()
    weights = fit_weights(wc.fit, members, images, labels, float(wc.sigma), params.settings, params.noise_seed, device)
    seconds = time.perf_counter() - started
    print(f"{wc.fit} weights of {wc.ensemble} on {len(held)} held-out images: {weights} ({seconds:.1f}s)")
    write_json(snakemake.output[0], {
        "weights": weights, "members": list(snakemake.input.models), "heldout_images": len(held),
        "seconds": seconds, "provenance": provenance.collect(device, dict(params.settings)),
    })


run_logged(snakemake.log[0], main)
