"""Rule certify_adaptive: CertifyAdp (004 Alg. 2) of one ensemble at predetermined radii, by direct
evaluation of the members (its later stages draw more samples than the stored outputs hold)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    import csv
    import time

    import torch

    from rslib.runtime import provenance
    from rslib.certification.adaptive import certify_adaptive_images
    from rslib.models.checkpoint import load_model
    from rslib.data.load import load_split
    from rslib.ensembles.certify import rule_for
    from rslib.ensembles.rules import EnsembleClassifier
    from rslib.runtime.io import atomic_path, write_json
    from rslib.ensembles.schemes import get_scheme
    from rslib.certification.smooth import Smooth
    from rslib.runtime.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    device = resolve_device(params.device)
    sigma, certify, adaptive = float(wc.sigma), params.certify, params.adaptive
    # allow_code: the workflow's own model files, imported TorchScript / builder networks included
    models = [load_model(p, dataset=wc.dataset, sigma=sigma, device=device, allow_code=True)
              for p in snakemake.input.models]
    scheme = get_scheme(adaptive["scheme"])
    ensemble = EnsembleClassifier([m for m, _, _ in models], rule_for(scheme, params.settings))
    smooth = Smooth(ensemble, models[0][1].num_classes, sigma, params.noise_seed, device)
    subset = evaluation_subset(snakemake.input.data, params.eval)
    started = time.perf_counter()
    rows, summaries = certify_adaptive_images(
        smooth, load_split(snakemake.input.data, "test"), subset, adaptive["radii"], certify["n0"],
        adaptive["stages"], certify["alpha"], adaptive["beta"], certify["batch_size"],
        n_plain=certify["n0"] + certify["n"], log=print,
    )
    with atomic_path(snakemake.output.tsv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    write_json(snakemake.output.summary, {
        "ensemble": wc.ensemble, "scheme": scheme.name, "stages": list(adaptive["stages"]),
        "beta": adaptive["beta"], "alpha": certify["alpha"], "n_plain": certify["n0"] + certify["n"],
        "radii": summaries, "seconds": time.perf_counter() - started,
        "provenance": provenance.collect(device, dict(adaptive)),
    })


run_logged(snakemake.log[0], main)
