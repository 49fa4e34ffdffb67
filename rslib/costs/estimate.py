"""GPU-hour estimates for a configured run, from measured per-step costs.

:func:`rslib.costs.measure.measure_costs` times a few real optimisation steps of each configured training method
(the model built from its :class:`rslib.models.checkpoint.ModelSpec`, the method's own ``loss`` and the
training loop's own step function, on random images of the dataset's shape) and the noisy
forward passes of certification (``Smooth.sample_counts``, the code CERTIFY runs).
:func:`estimate_gpu_hours` multiplies these by the number of steps and samples of the configured
grid; :func:`summarize_estimate` totals them per rule and dataset.

The estimate is measured seconds per step × steps of the configured grid: it leaves out data
loading from disk (ImageNet), checkpoint writes, training-curve evaluations and job start-up,
and it assumes the timed steps are representative (the methods' per-step work does not change
over epochs; warm-ups change only ε or loss weights).

torch is imported inside the functions, so the estimate itself runs without it.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Hyper-parameters that set the schedule or optimiser constants but not the work of one step.
SCHEDULE_KEYS = frozenset({"epochs", "lr", "lr_milestones", "lr_gamma", "momentum", "weight_decay"})


def cost_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters that may change the cost of one step (all but :data:`SCHEDULE_KEYS`)."""
    return {k: v for k, v in sorted(hparams.items()) if k not in SCHEDULE_KEYS}


def _key(hparams: dict[str, Any]) -> str:
    return json.dumps(cost_hparams(hparams), sort_keys=True, default=str)


def _train_match(job: dict, measured: list[dict]) -> dict:
    hparams = dict(job["hparams"])
    batch = int(hparams["batch_size"])

    def same_cost(rec: dict) -> bool:
        if "hparams" in rec:
            return _key(rec["hparams"]) == _key(hparams)
        return rec.get("batch_size") is None or int(rec["batch_size"]) == batch

    train = [
        r for r in measured
        if r.get("kind", "train") == "train" and "seconds_per_step" in r
        and (r["dataset"], r["arch"], r["method"]) == (job["dataset"], job["arch"], job["method"]) and same_cost(r)
    ]
    for rec in train:
        if float(rec.get("sigma", math.nan)) == float(job["sigma"]):
            return rec
    if train:
        return train[0]
    raise ValueError(
        f"no measured training cost for dataset={job['dataset']} arch={job['arch']} method={job['method']} "
        f"sigma={float(job['sigma']):g} batch_size={batch} (cost hparams {_key(hparams)}); rerun measure_costs "
        f"with this job (measured: {sorted({(r['dataset'], r['arch'], r['method']) for r in measured if 'method' in r})})"
    )


def _certify_match(job: dict, measured: list[dict]) -> dict:
    for rec in measured:
        if rec.get("kind") == "certify" and (rec["dataset"], rec["arch"]) == (job["dataset"], job["arch"]):
            return rec
    raise ValueError(
        f"no measured certification cost for dataset={job['dataset']} arch={job['arch']} "
        f"(model {job.get('model', '?')}); rerun measure_costs with a training job of this dataset and arch"
    )


def estimate_gpu_hours(
    train_jobs: list[dict], certify_jobs: list[dict], measured: list[dict], n_train: dict[str, int]
):
    """One row per job: ``rule``, ``dataset``, ``arch``, ``method``, ``sigma``, ``seed``, ``label``,
    ``units`` (optimisation steps or noisy samples), ``seconds_per_unit``, ``gpu_hours``.

    Training: ``epochs × ceil((n_train − heldout) / batch_size) × seconds_per_step``, with the
    measurement of the same (dataset, arch, method, cost hyper-parameters), preferring the same σ.
    Certification: ``images × samples_per_image × seconds_per_sample`` of the (dataset, arch);
    ``samples_per_image`` defaults to ``n0 + n``.
    A job without a matching measurement raises ValueError naming it.
    """
    import pandas as pd

    rows = []
    for job in train_jobs:
        hparams = dict(job["hparams"])
        if job["dataset"] not in n_train:
            raise ValueError(f"no training-set size for dataset {job['dataset']!r} (have: {sorted(n_train)})")
        kept = int(n_train[job["dataset"]]) - int(job.get("heldout", 0) or 0)
        steps = int(hparams["epochs"]) * math.ceil(kept / int(hparams["batch_size"]))
        rec = _train_match(job, measured)
        seconds = float(rec["seconds_per_step"])
        rows.append({
            "rule": "train", "dataset": job["dataset"], "arch": job["arch"], "method": job["method"],
            "sigma": float(job["sigma"]), "seed": job.get("seed"),
            "label": job.get("label", f"{job['method']} sigma={float(job['sigma']):g} seed={job.get('seed')}"),
            "units": steps, "seconds_per_unit": seconds, "gpu_hours": steps * seconds / 3600.0,
        })
    for job in certify_jobs:
        samples = job.get("samples_per_image")
        if samples is None:
            samples = int(job["n0"]) + int(job["n"])
        units = int(job["images"]) * int(samples)
        seconds = float(_certify_match(job, measured)["seconds_per_sample"])
        rows.append({
            "rule": "certify", "dataset": job["dataset"], "arch": job["arch"], "method": job.get("method"),
            "sigma": float(job["sigma"]) if job.get("sigma") is not None else math.nan, "seed": job.get("seed"),
            "label": job.get("model", job.get("label")), "units": units, "seconds_per_unit": seconds,
            "gpu_hours": units * seconds / 3600.0,
        })
    columns = ["rule", "dataset", "arch", "method", "sigma", "seed", "label", "units", "seconds_per_unit", "gpu_hours"]
    return pd.DataFrame(rows, columns=columns)


def summarize_estimate(df):
    """Total GPU-hours (and job count) per rule and dataset, then a ``TOTAL`` row."""
    import pandas as pd

    summary = (
        df.groupby(["rule", "dataset"], sort=False)
        .agg(jobs=("gpu_hours", "size"), gpu_hours=("gpu_hours", "sum"))
        .reset_index()
    )
    total = pd.DataFrame([{"rule": "TOTAL", "dataset": "", "jobs": int(len(df)), "gpu_hours": float(df["gpu_hours"].sum())}])
    return pd.concat([summary, total], ignore_index=True)


def imported_section(saved, run_hours: float, unpriced: list[str]) -> str:
    """What importing released checkpoints saves: the training GPU-hours of the imported models
    (estimated like any training job from their configured hparams) and the full-retraining total."""
    if not len(saved) and not unpriced:
        return ""
    text = "\n## Released checkpoints instead of training\n\n"
    if len(saved):
        hours = float(saved["gpu_hours"].sum())
        per_method = saved.groupby(["dataset", "method"], sort=False).agg(
            models=("gpu_hours", "size"), gpu_hours=("gpu_hours", "sum")).reset_index()
        text += (markdown_table(per_method)
                 + f"\n{len(saved)} imported models would take {hours:.2f} GPU-hours to train here: this run needs "
                 f"{run_hours:.2f} GPU-hours instead of {run_hours + hours:.2f} for the full retraining grid "
                 f"({hours:.2f} saved).\n")
    if unpriced:
        text += (f"\n{len(unpriced)} imported models have no configured hparams, so their training cost is not "
                 f"estimated: {', '.join(unpriced)}.\n")
    return text


def markdown_table(df, floatfmt: str = ".2f") -> str:
    """A GitHub Markdown table of ``df`` (no tabulate dependency)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
