"""The run's own summaries: every certified model (``certified_accuracy.{tex,csv,pdf}``), every
ensemble and scheme (``ensembles.{tex,csv}``, ``adaptive.csv``) and the provenance of every result
(``provenance.csv``); ACR and certified accuracy as :mod:`rslib.report.metrics` defines them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rslib.certification.tsv import read_certificates
from rslib.report.figures import plot_certified_accuracy
from rslib.report.latex import best_in_columns, latex_table
from rslib.report.metrics import summarize
from rslib.runtime.io import atomic_path


def summary_rows(models: Sequence[dict], frames: Sequence[pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """One row per model: dataset, method, σ, seed, images, accuracy, ACR, certified accuracy at radii."""
    records = []
    for m, df in zip(models, frames):
        records.append({"dataset": m["dataset"], "method": m["method"], "sigma": float(m["sigma"]),
                        "seed": int(m["seed"]), **summarize(df, radii)})
    columns = ["dataset", "method", "sigma", "seed", "images", "acr", "accuracy", *[f"r={r:g}" for r in radii]]
    return pd.DataFrame.from_records(records, columns=columns)


def write_summary(
    *,
    models: Sequence[dict],
    certificates: Sequence[str | os.PathLike],
    radii: Sequence[float],
    max_radius: float,
    table: str | os.PathLike,
    csv: str | os.PathLike,
    figure: str | os.PathLike,
) -> pd.DataFrame:
    """Certified-accuracy/ACR table (LaTeX, CSV) and curves for ``models`` from their TSVs."""
    frames = [read_certificates(p) for p in certificates]
    summary = summary_rows(models, frames, radii)
    with atomic_path(csv) as tmp:
        summary.to_csv(tmp, index=False)
    radius_cols = [f"r={r:g}" for r in radii]
    header = ["Dataset", "Method", "σ", "Seed", "ACR", *[f"{r:g}" for r in radii]]
    values = summary[["acr", *radius_cols]].to_numpy().tolist()
    rows = [
        [r["dataset"], r["method"], f"{r['sigma']:.2f}", str(r["seed"]), f"{r['acr']:.3f}",
         *[f"{100 * r[c]:.1f}" for c in radius_cols]]
        for r in summary.to_dict("records")
    ]
    # best ACR and best certified accuracy per radius, within each (dataset, σ) group
    bold: set[tuple[int, int]] = set()
    for _, group in summary.groupby(["dataset", "sigma"]):
        idx = list(group.index)
        marks = best_in_columns([values[i] for i in idx], range(len(values[0])))
        bold |= {(idx[i], j + 4) for i, j in marks}
    caption = (
        "Certified accuracy (%) of the smoothed classifier at each L2 radius and ACR; "
        "best per dataset and sigma in bold."
        + ("" if rows else " No model was certified by this run (its rows come from published logs only).")
    )
    text = latex_table(header, rows, caption=caption, align="lllr" + "r" * (1 + len(radii)), bold=bold)
    with atomic_path(table) as tmp:
        Path(tmp).write_text(text)
    curves: dict[str, dict[str, pd.DataFrame]] = {}
    for m, df in zip(models, frames):
        curves.setdefault(f"{m['dataset']}, σ={m['sigma']}", {})[f"{m['method']} seed {m['seed']}"] = df
    plot_certified_accuracy(curves, figure, max_radius)
    return summary


def write_ensemble_summary(
    *,
    ensembles: Sequence[dict],
    evaluation: Sequence[str],
    certificates: Sequence[str | os.PathLike],
    adaptive: Sequence[dict],
    adaptive_summaries: Sequence[str | os.PathLike],
    radii: Sequence[float],
    table: str | os.PathLike,
    csv: str | os.PathLike,
    adaptive_csv: str | os.PathLike,
) -> pd.DataFrame:
    """ACR and certified accuracy of every certified ensemble and scheme (LaTeX + CSV), how each
    was evaluated (``evaluation``: "stored float32 outputs", "stored float16 outputs" or "direct
    evaluation"), and the CertifyAdp results (certified accuracy, stage return fractions, sample
    reduction) as CSV."""
    from rslib.ensembles.schemes import ensemble_label, get_scheme

    records = []
    for e, how, path in zip(ensembles, evaluation, certificates):
        scheme = get_scheme(e["scheme"])
        records.append({"dataset": e["dataset"], "sigma": float(e["sigma"]), "ensemble": e["ensemble"],
                        "label": ensemble_label(e["ensemble"]), "scheme": scheme.name, "sound": scheme.sound,
                        **summarize(read_certificates(path), radii), "evaluation": how})
    summary = pd.DataFrame.from_records(records)
    with atomic_path(csv) as tmp:
        summary.to_csv(tmp, index=False)
    radius_cols = [f"r={r:g}" for r in radii]
    rows, values = [], []
    for r in records:
        scheme = get_scheme(r["scheme"])
        rows.append([r["dataset"], f"{r['sigma']:.2f}", r["label"], scheme.label + ("" if scheme.sound else "†"),
                     f"{r['acr']:.3f}", *[f"{100 * r[c]:.1f}" for c in radius_cols]])
        values.append([r["acr"], *[r[c] for c in radius_cols]])
    bold: set[tuple[int, int]] = set()
    if records:
        for _, group in summary.groupby(["dataset", "sigma"]):
            idx = list(group.index)
            bold |= {(idx[i], j + 4) for i, j in best_in_columns([values[i] for i in idx], range(len(values[0])))}
    methods = "; ".join(f"{how} ({d})" for d, how in dict.fromkeys(zip(summary.get("dataset", []),
                                                                        summary.get("evaluation", []))))
    caption = ("Ensembles: certified accuracy (%) at each L2 radius and ACR; best per dataset and sigma in bold. "
               "†: weights depend on the test point (not a sound certificate)."
               + (f" Certified from {methods}." if methods else ""))
    header = ["Dataset", "σ", "Ensemble", "Scheme", "ACR", *[f"{r:g}" for r in radii]]
    text = latex_table(header, rows, caption=caption, align="llll" + "r" * (1 + len(radii)), bold=bold)
    with atomic_path(table) as tmp:
        Path(tmp).write_text(text)
    adaptive_records = []
    for e, path in zip(adaptive, adaptive_summaries):
        result = json.loads(Path(path).read_text())
        for r in result["radii"]:
            adaptive_records.append({
                "dataset": e["dataset"], "sigma": float(e["sigma"]), "ensemble": e["ensemble"],
                "scheme": result["scheme"], "radius": r["radius"], "certified_accuracy": r["certified_accuracy"],
                "sample_reduction": r["sample_reduction"], "mean_samples": r["mean_samples"],
                **{f"returned_stage{j + 1}": f for j, f in enumerate(r["stage_return_fractions"])},
            })
    with atomic_path(adaptive_csv) as tmp:
        pd.DataFrame.from_records(adaptive_records).to_csv(tmp, index=False)
    return summary


def provenance_table(model_records: list[str], ensemble_records: list[str]) -> Any:
    """One row per certified model (merged ``certify.json``) and ensemble certificate
    (``ensembles/.../certify.json``): where and with what each result was made, and its times —
    the provenance section of the HTML report (a pandas DataFrame)."""
    import pandas as pd

    rows = []
    for path in model_records:
        rec = json.loads(Path(path).read_text())
        model = (rec.get("model") or {}).get("provenance") or {}
        shard = (rec.get("shards") or [{}])[0]
        imported = (rec.get("model") or {}).get("imported")
        rows.append({
            "result": str(Path(path).parent),
            "kind": (f"model (imported {imported['format']}: {imported['source']}, sha256 {imported['sha256'][:16]}…)"
                     if imported else "model"),
            "config_hash": (model.get("config_hash") or "") + " / " + rec.get("certify_config_hash", ""),
            "rslib_version": model.get("rslib_version"), "rslib_commit": model.get("rslib_commit"),
            "torch": (model.get("packages") or {}).get("torch"),
            "train_device": model.get("device"), "certify_device": shard.get("device"),
            "train_seconds": rec.get("model", {}).get("train_seconds"), "certify_seconds": rec.get("certify_seconds"),
        })
    for path in ensemble_records:
        rec = json.loads(Path(path).read_text())
        prov = rec.get("provenance") or {}
        rows.append({
            "result": str(Path(path).parent), "kind": f"ensemble ({rec.get('mode')})",
            "config_hash": prov.get("config_hash"), "rslib_version": prov.get("rslib_version"),
            "rslib_commit": prov.get("rslib_commit"), "torch": (prov.get("packages") or {}).get("torch"),
            "train_device": None, "certify_device": prov.get("device"),
            "train_seconds": None, "certify_seconds": rec.get("certify_seconds"),
        })
    return pd.DataFrame.from_records(rows)
