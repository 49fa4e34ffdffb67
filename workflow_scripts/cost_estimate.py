"""Rule cost_estimate: GPU-hours of the configured run = measured seconds per step × steps of
the configured grid (rslib.costs)."""

import json
import sys
from pathlib import Path

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.costs.estimate import estimate_gpu_hours, imported_section, markdown_table, summarize_estimate
from rslib.runtime.io import atomic_path, write_text
from rslib.runtime.jobs import run_logged

params = snakemake.params


def main():
    import pandas as pd

    from rslib.data.registry import dataset_info

    # nothing measured when the run trains and certifies nothing (rules/cost.smk)
    measured = json.loads(Path(snakemake.input.measured).read_text()) if snakemake.input.measured else []
    # training-set sizes from the dataset registry: the estimate needs no downloaded dataset
    jobs = list(params.train_jobs) + list(params.imported_jobs)
    datasets = snakemake.config["datasets"]
    n_train = {job["dataset"]: dataset_info(job["dataset"], datasets[job["dataset"]]).train_images for job in jobs}
    df = estimate_gpu_hours(list(params.train_jobs), list(params.certify_jobs), measured, n_train)
    saved = estimate_gpu_hours(list(params.imported_jobs), [], measured, n_train)
    saved["rule"] = "imported (not trained)"
    with atomic_path(snakemake.output.csv) as tmp:
        # empty frames left out: pandas' concat would otherwise let their all-NA columns set dtypes
        pd.concat([f for f in (df, saved) if len(f)] or [df], ignore_index=True).to_csv(tmp, index=False)
    devices = sorted({str(r.get("device", "unknown")) for r in measured})
    summary = summarize_estimate(df)
    text = (
        "# Estimated GPU-hours of the configured run\n\n"
        + markdown_table(summary)
        + imported_section(saved, float(df["gpu_hours"].sum()), list(params.imported_unpriced))
        + (f"\nCosts measured on: {', '.join(devices) or 'unknown'}.\n\n" if measured else
           "\nNothing to measure: this run trains, imports and certifies no model (its rows come from "
           "published certification logs).\n\n")
        + "The estimate = measured seconds per step × steps of the configured grid (training: epochs × "
        "ceil((training images − held-out) / batch size) optimisation steps; certification: images × "
        "(n0 + n) noisy samples). It leaves out data loading from disk, checkpoints, training curves "
        "and job start-up.\n"
    )
    write_text(snakemake.output.md, text)
    print(text, file=sys.stderr, flush=True)


run_logged(snakemake.log[0], main)
