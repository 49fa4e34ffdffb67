"""Rule measure_costs: time a few real training steps per configured method and certification's
noisy forward pass, for the GPU-hour estimate (rslib.costs)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime.devices import device_name
from rslib.costs.measure import measure_costs
from rslib.runtime.io import write_json
from rslib.runtime.jobs import run_logged

params = snakemake.params


def main():
    import torch

    from rslib.runtime.devices import resolve_device

    if snakemake.threads:
        torch.set_num_threads(int(snakemake.threads))
    dev = resolve_device(params.device)
    name = device_name(dev)
    print(f"measuring costs of {len(params.jobs)} training jobs on {dev} ({name})", file=sys.stderr, flush=True)
    records = measure_costs(
        list(params.jobs),
        str(dev),
        steps=int(params.steps),
        certify_batch=int(params.certify_batch),
        autocast_bf16=bool(getattr(params, "autocast_bf16", False)),
        datasets=snakemake.config["datasets"],
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    write_json(snakemake.output[0], [{**r, "device": name} for r in records])


run_logged(snakemake.log[0], main)
