"""Rule certify_ensemble: CERTIFY one ensemble under one scheme, by reduction over the members'
stored outputs or (ensemble_evaluation: direct) by running the members on the noise."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    import json
    import time

    import torch

    from rslib.runtime import provenance
    from rslib.ensembles.certify import certify_scheme_direct, certify_scheme_from_outputs
    from rslib.ensembles.outputs import attach_pseudo_outputs, concat_outputs, load_outputs
    from rslib.runtime.io import write_json
    from rslib.ensembles.schemes import get_scheme, member_key
    from rslib.runtime.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    scheme = get_scheme(wc.scheme)
    certify = params.certify
    members = list(params.members)
    fitted = json.loads(open(snakemake.input.weights[0]).read())["weights"] if snakemake.input.weights else None
    sigma = float(wc.sigma)
    started = time.perf_counter()
    if snakemake.input.outputs:
        device = torch.device("cpu")
        shards = list(snakemake.input.outputs)
        per_member = len(shards) // len(members)
        outputs = [concat_outputs([load_outputs(p) for p in shards[k * per_member:(k + 1) * per_member]])
                   for k in range(len(members))]
        mode = f"stored {str(outputs[0]['estimation'].dtype).removeprefix('torch.')} outputs"
        if snakemake.input.pseudo:  # per-point EsbRS weights: the members' pseudo-model outputs
            pseudo = list(snakemake.input.pseudo)
            for k, out in enumerate(outputs):
                attach_pseudo_outputs(out, pseudo[k * per_member:(k + 1) * per_member])
        loaded = time.perf_counter()
        used = certify_scheme_from_outputs(outputs, scheme, params.settings, certify["alpha"], sigma,
                                           snakemake.output.tsv, fitted)
    else:
        from rslib.models.checkpoint import load_model
        from rslib.data.load import load_split

        mode, device = "direct evaluation", resolve_device(params.device)
        # allow_code: the workflow's own model files, imported TorchScript / builder networks included
        models = [load_model(p, dataset=wc.dataset, sigma=sigma, device=device, allow_code=True)
                  for p in snakemake.input.models]
        loaded = time.perf_counter()
        subset = evaluation_subset(snakemake.input.data, params.eval)
        used = certify_scheme_direct(
            [m for m, _, _ in models], [member_key(m["method"], int(m["seed"])) for m in members],
            load_split(snakemake.input.data, "test"), subset, scheme, params.settings,
            num_classes=models[0][1].num_classes, sigma=sigma, n0=certify["n0"], n=certify["n"],
            alpha=certify["alpha"], batch_size=certify["batch_size"], noise_seed=params.noise_seed,
            out_tsv=snakemake.output.tsv, device=device, fitted_weights=fitted,
        )
    seconds = time.perf_counter() - loaded
    print(f"{wc.ensemble} ({scheme.label}) by {mode}: {seconds:.2f}s certification, "
          f"{loaded - started:.2f}s loading")
    write_json(snakemake.output.provenance, {
        "ensemble": wc.ensemble, "scheme": scheme.name, "aggregation": scheme.aggregation, "sound": scheme.sound,
        "members": members, "mode": mode, "certify_seconds": seconds, "load_seconds": loaded - started,
        "weights_per_image": used, "provenance": provenance.collect(device, dict(certify)),
    })


run_logged(snakemake.log[0], main)
