"""Figures: radius–accuracy curves of every model and ensemble, the paper's Figure 1 (best ACR so
far vs training hours) and Figure 3 (ACR vs number of ensemble components)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rslib.experiment.artefacts import Source, artefact
from rslib.report.metrics import certified_accuracy
from rslib.runtime.io import atomic_path


def plot_certified_accuracy(curves: dict[str, dict[str, pd.DataFrame]], path: str | os.PathLike, max_radius: float) -> None:
    """One panel per group (e.g. dataset and σ), one line per model: certified accuracy vs radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radii = np.linspace(0.0, max_radius, 200)
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4.2 * max(1, len(curves)), 3.4), squeeze=False)
    if not curves:  # a run that certified nothing (only published logs): say so rather than fail
        axes[0][0].text(0.5, 0.5, "no model certified by this run", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (title, models) in zip(axes[0], curves.items()):
        for name, df in models.items():
            ax.plot(radii, [certified_accuracy(df, r) for r in radii], label=name)
        ax.set(title=title, xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1), xlim=(0, max_radius))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "pdf")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _line_figure(path: str, lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                 sigma: str, integer_x: bool = False, **style: Any) -> None:
    """One small PDF line plot (the paper's single-panel figures), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rslib.runtime.io import atomic_path

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o", label=label, **style)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"σ={float(sigma):.2f}")
    if integer_x:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="pdf")
    plt.close(fig)


def plot_figure1(curves: Mapping[str, Any], path: str, sigma: str) -> list[dict[str, Any]]:
    """Figure 1: best ACR seen so far vs training hours (ACR estimated every few epochs during
    training, :mod:`rslib.training.curves`), one line per method. Returns the plotted points."""
    lines, points = {}, []
    for label, df in curves.items():
        hours = (df["train_seconds"] / 3600.0).tolist()
        best = df["acr"].cummax().tolist()
        lines[label] = (hours, best)
        points += [{"model": label, "hours": h, "best_acr": b} for h, b in zip(hours, best)]
    _line_figure(path, lines, "training time (hours)", "best ACR so far", sigma, markersize=3)
    return points


def plot_figure3(series: Mapping[str, Mapping[int, float]], path: str, sigma: str) -> None:
    """Figure 3: ACR vs number of ensemble components, one line per family
    (N×AdvMacer; AdvMacer×1 + n SmoothAdv)."""
    lines = {label: (sorted(pts), [pts[k] for k in sorted(pts)]) for label, pts in series.items()}
    _line_figure(path, lines, "number of ensemble components", "ACR", sigma, integer_x=True)


def figure3_series(sources: Sequence[Source], acr: Mapping[Source, float]) -> dict[str, dict[int, float]]:
    """Group Figure 3's sources into its two families by ensemble size (the single AdvMacer is
    size 1 of both)."""
    from rslib.ensembles.schemes import parse_ensemble_name

    series: dict[str, dict[int, float]] = {"N×AdvMacer": {}, "AdvMacer×1+SmoothAdv×n": {}}
    for src in sources:
        if src.single:
            for points in series.values():
                points[1] = acr[src]
            continue
        parts = dict(parse_ensemble_name(src.name))
        size = sum(parts.values())
        family = "N×AdvMacer" if set(parts) == {"advmacer"} else "AdvMacer×1+SmoothAdv×n"
        series[family][size] = acr[src]
    return series


def _training_curves(sources: Sequence[Source], certificates: Sequence[str], curves: Sequence[str], sigma: str,
                     out_pdf: str) -> Any:
    """Figure 1: the training curves of the singles this workflow trained (the others have none);
    a method of the user's own is marked as not in the paper."""
    import pandas as pd

    trained = [s for s in sources if s.has_curve]
    points = plot_figure1({s.marked_label: pd.read_csv(c) for s, c in zip(trained, curves)}, out_pdf, sigma)
    return pd.DataFrame.from_records(points, columns=["model", "hours", "best_acr"])


def _ensemble_sizes(sources: Sequence[Source], certificates: Sequence[str], curves: Sequence[str], sigma: str,
                    out_pdf: str) -> Any:
    """Figure 3: ACR by number of ensemble components, per family."""
    import pandas as pd

    from rslib.certification.tsv import read_certificates
    from rslib.report.metrics import average_certified_radius

    acr = {s: average_certified_radius(read_certificates(p)) for s, p in zip(sources, certificates)}
    series = figure3_series(sources, acr)
    plot_figure3(series, out_pdf, sigma)
    return pd.DataFrame.from_records(
        [{"family": f, "components": k, "acr": v} for f, pts in series.items() for k, v in sorted(pts.items())],
        columns=["family", "components", "acr"])


#: The figure builder of each layout of the registry (:data:`rslib.experiment.artefacts.ARTEFACTS`):
#: it draws the PDF and returns the plotted values.
BUILDERS: dict[str, Callable[..., Any]] = {"training_curves": _training_curves, "ensemble_sizes": _ensemble_sizes}


def write_figure(
    name: str, sources: Sequence[Source], certificates: Sequence[str], curves: Sequence[str], sigma: str,
    out_pdf: str, out_csv: str,
) -> None:
    """Figure ``name`` (Figure 1: training curves of the singles; Figure 3: ACR by ensemble size)
    with the builder of its layout, and the plotted values as CSV."""
    from rslib.runtime.io import atomic_path

    figure = artefact(name)
    if figure.kind != "figure":
        raise ValueError(f"{name} is not a figure")
    frame = BUILDERS[figure.layout](sources, certificates, curves, sigma, out_pdf)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
