"""Metrics over certification TSVs, LaTeX (booktabs) tables and radius–accuracy curves.

Definitions (``000`` Sec. 4 "Evaluation", following Cohen et al. and MACER ``001`` Sec. 4):
ACR = mean over all evaluated images of radius·1[correct] (abstentions and errors count as 0);
certified accuracy at r = fraction of evaluated images classified correctly with radius ≥ r.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .certify import (  # noqa: F401 (parse_seconds: also rslib.analysis's, as before)
    COLUMNS, HEADER, CertificateRow, RowError, certificate_row, parse_seconds, read_rows,
)
from .io import atomic_path


def read_certificates(path: str | os.PathLike) -> pd.DataFrame:
    """A Cohen-style certification TSV (``idx label predict radius correct time``): ours (time
    in seconds, radii unrounded) or a published log (time as ``h:mm:ss``, radii rounded)."""
    df = pd.read_csv(path, sep="\t", float_precision="round_trip")  # radii exactly as written
    if tuple(df.columns) != COLUMNS:
        raise ValueError(f"{path}: expected columns {COLUMNS}, got {tuple(df.columns)}")
    if df["time"].dtype == object:
        times = []
        for line, value in enumerate(df["time"], start=2):
            try:
                times.append(parse_seconds(value))
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
        df["time"] = np.asarray(times, dtype=float)
    return df


#: a σ marker: a whole path component ``noise_<σ>`` (folder of Cohen's, Salman's, Jeong's
#: releases) or ``sigma_<σ>`` (the log file of Cohen's and Salman's ``…/noise_0.25/test/sigma_0.25``)
_SIGMA_COMPONENT = re.compile(r"(?:noise|sigma)_([0-9]+(?:\.[0-9]+)?)")


def check_log_sigma(source: str | os.PathLike, sigma: float) -> None:
    """Refuse a published log whose path says it is of another σ than ``sigma``.

    A σ marker is a whole path component (folder or file name) ``noise_<σ>`` or ``sigma_<σ>``,
    as the reference repositories name them (``…/noise_0.25/test/sigma_0.25``,
    ``…/cifar_resnet110/noise_0.50``, ``…/smoothmix/noise_0.5``); every marker must equal
    ``sigma`` numerically (``noise_0.5`` is σ = 0.50). Text inside a longer name
    (``consistency_noise_0.25``, the curve file ``noise_0.25_acc``) is not a marker, and a path
    without markers is not checked.
    """
    from .errors import CertificateLogError

    parts = Path(source).as_posix().split("/")
    for k, part in enumerate(parts):
        marker = _SIGMA_COMPONENT.fullmatch(part)
        if marker and float(marker.group(1)) != float(sigma):
            kind = "file name" if k == len(parts) - 1 else "folder"
            raise CertificateLogError(
                f"published log {source}: its {kind} {part!r} says sigma={float(marker.group(1)):g}, expected "
                f"sigma={float(sigma):g} (the slot it is configured for): configure it under its own sigma, or "
                f"give the sigma={float(sigma):g} log"
            )


def import_certification_log(
    source: str | os.PathLike,
    indices: Sequence[int],
    out_tsv: str | os.PathLike,
    *,
    dataset: str,
    sigma: float,
) -> dict:
    """A published certification log (Cohen et al.'s format, as the reference repositories
    release them) restricted to the evaluation subset ``indices``, written as our TSV
    (:func:`rslib.certify.certificate_row`: time in seconds, radii as published). Returns its
    provenance (source path and SHA-256, rows, the dataset and σ it was checked against).

    The log must be one of ``dataset`` at ``sigma``, whole and as Cohen et al.'s ``certify.py``
    prints it: its path's σ markers equal ``sigma`` (:func:`check_log_sigma`); its header is
    ``idx label predict radius correct time``; every row passes
    :func:`rslib.certify.check_row`, the checker of our own shards (six fields, ending with its
    newline; label and predict below the dataset's class count from
    :data:`rslib.dataset_registry.DATASETS`, predict −1 for abstain; radius finite ≥ 0 and 0 on
    an abstention; correct = [predict = label]; time as seconds or ``h:mm:ss[.ffffff]``); no
    image appears twice; and it covers every one of ``indices``: a published row must describe
    the same images as every other row of a table (``000`` Tables 5-7 use the first 500 test
    images). Anything else raises :class:`rslib.errors.CertificateLogError`, one line naming
    ``file:line``, the field and what was expected, and nothing is written.
    """
    from .dataset_registry import dataset_info
    from .errors import CertificateLogError
    from .io import file_digest

    classes = dataset_info(dataset).num_classes
    check_log_sigma(source, sigma)
    try:
        f = open(source, encoding="utf-8")
    except OSError as exc:
        raise CertificateLogError(f"published log {source}: cannot read it ({exc.strerror})") from None
    by_index: dict[int, tuple[int, CertificateRow]] = {}  # idx -> (line, row)
    with f:
        try:
            for number, _, row in read_rows(f, str(source), classes=classes, dataset=dataset, clock=True):
                if row.idx in by_index:
                    raise CertificateLogError(
                        f"published log {source}:{number}: image {row.idx} appears twice (first on line "
                        f"{by_index[row.idx][0]}), expected each image once"
                    )
                by_index[row.idx] = (number, row)
        except RowError as exc:
            raise CertificateLogError(f"published log {exc}") from None
    wanted = [int(i) for i in indices]
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise CertificateLogError(
            f"published log {source} lacks {len(missing)} of the {len(wanted)} evaluation images "
            f"(first missing: {missing[:5]}); it must cover the configured evaluation subset"
        )
    rows = [by_index[i][1] for i in wanted]
    with atomic_path(out_tsv) as tmp:
        Path(tmp).write_text(HEADER + "".join(
            certificate_row(r.idx, r.label, r.predict, r.radius, r.seconds) for r in rows))
    digest = file_digest(source, "sha256")
    return {"source": str(source), "sha256": digest, "format": "cohen-log", "rows": len(rows),
            "rows_in_source": len(by_index), "dataset": dataset, "num_classes": classes, "sigma": float(sigma)}


def average_certified_radius(df: pd.DataFrame) -> float:
    return float(np.mean(df["radius"].to_numpy() * (df["correct"].to_numpy() == 1)))


def certified_accuracy(df: pd.DataFrame, radius: float) -> float:
    return float(np.mean((df["correct"].to_numpy() == 1) & (df["radius"].to_numpy() >= radius)))


def summarize(df: pd.DataFrame, radii: Iterable[float]) -> dict[str, float]:
    """ACR, clean accuracy of the smoothed classifier and certified accuracy at each radius."""
    out = {"images": float(len(df)), "acr": average_certified_radius(df), "accuracy": certified_accuracy(df, 0.0)}
    for r in radii:
        out[f"r={r:g}"] = certified_accuracy(df, r)
    return out


def per_image_statistics(df: pd.DataFrame, radii: Iterable[float]) -> dict[str, np.ndarray]:
    """Each statistic of :func:`summarize` as the per-image quantity it averages: radius·1[correct]
    (ACR), 1[correct] (clean accuracy), 1[correct, radius ≥ r] (certified accuracy at r)."""
    correct = df["correct"].to_numpy() == 1
    radius = df["radius"].to_numpy(dtype=float)
    out = {"acr": radius * correct, "accuracy": correct.astype(float)}
    for r in radii:
        out[f"r={r:g}"] = (correct & (radius >= r)).astype(float)
    return out


def bootstrap_intervals(
    certificates: Sequence[pd.DataFrame],
    radii: Iterable[float],
    *,
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every :func:`summarize` statistic.

    ``certificates`` are the certificates of one table row on the same images: one file, or
    one per trained seed of a method (then the interval covers the seed as well). Each of the
    ``replicates`` draws a seed uniformly (``rng.integers(S, size=B)``), then N images with
    replacement (``rng.integers(N, size=(B, N))``), in that order from
    ``np.random.default_rng(seed)``, and evaluates the statistic of that seed on those images;
    the interval is the (1 − level)/2 and (1 + level)/2 quantiles (numpy's default linear
    interpolation). Seeded: the same certificates give the same interval on every rerun, and
    rows of the same size share their image draws (paired across a table).
    """
    radii = list(radii)
    if not certificates:
        raise ValueError("bootstrap_intervals: no certificates")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_intervals: level {level} is not in (0, 1)")
    first = certificates[0]["idx"].to_numpy()
    for df in certificates[1:]:
        if not np.array_equal(df["idx"].to_numpy(), first):
            raise ValueError("bootstrap_intervals: the seeds' certificates cover different images")
    per_seed = [per_image_statistics(df, radii) for df in certificates]
    rng = np.random.default_rng(seed)
    n_images = len(first)
    which = rng.integers(len(certificates), size=replicates)
    images = rng.integers(n_images, size=(replicates, n_images))
    tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out = {}
    for key in per_seed[0]:
        values = np.stack([stats[key] for stats in per_seed])  # seeds × images
        means = values[which[:, None], images].mean(axis=1)
        low, high = np.quantile(means, tails)
        out[key] = (float(low), float(high))
    return out


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
    # pdflatex's default OT1 text fonts print < > | as other glyphs (¡ ¿ —): set them in math
    "<": "$<$", ">": "$>$", "|": "$|$",
    "×": r"$\times$", "±": r"$\pm$", "−": "$-$", "–": "--", "—": "---", "…": r"\ldots{}", "·": r"$\cdot$",
    "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "→": r"$\rightarrow$", "°": r"$^\circ$",
    "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}", "‘": "`", "’": "'", "“": "``", "”": "''",
    "²": "$^2$", "√": r"$\surd$", "∞": r"$\infty$", "Φ": r"$\Phi$", "Σ": r"$\Sigma$", "Δ": r"$\Delta$",
    "Λ": r"$\Lambda$", "Ω": r"$\Omega$", "Γ": r"$\Gamma$", "Θ": r"$\Theta$", "Π": r"$\Pi$", "Ψ": r"$\Psi$",
    **{chr(0x3B1 + i): rf"$\{name}$" for i, name in enumerate(
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma "
        "tau upsilon phi chi psi omega".split())},
    "ο": "o",  # omicron has no LaTeX command: it is the Latin o
}


def latex_escape(text: str) -> str:
    """``text`` as pure-ASCII LaTeX for pdflatex's defaults (no inputenc/fontenc needed): LaTeX's
    special characters escaped, the Unicode we write (σ, ε, ×, −, –, ±, †, ‡, §, …) spelled as
    LaTeX, other characters by their compatibility decomposition without accents (é → e, ™ → TM)
    and what has none as ``[U+XXXX]``, so that no table fails over a label or a device name."""
    import unicodedata

    out = []
    for ch in text:
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch.isascii():
            out.append(ch)
        else:
            plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(latex_escape(plain) if plain and plain != ch else f"[U+{ord(ch):04X}]")
    return "".join(out)


#: Lines before and after the tabular of every .tex table. Compiled alone (``pdflatex t.tex``),
#: the file is a ``standalone`` document cropped to the table. ``\input{t.tex}`` in the body of
#: a paper that loads booktabs (and nothing else of ours) reads only the tabular: in a document
#: body LaTeX has made ``\documentclass`` ``\@notprerr`` (it is a preamble-only command), so the
#: preamble is skipped, and ``\rstableend`` is undefined there (``\csname`` makes it ``\relax``).
#: A paper that loads the ``standalone`` package gets the whole file, as that package expects.
_LATEX_BEGIN = (
    r"\expandafter\ifx\csname @notprerr\endcsname\documentclass\else",
    r"\def\rstableend{\end{document}}",
    r"\documentclass[varwidth=\maxdimen]{standalone}",
    r"\usepackage{booktabs}",
    r"\begin{document}",
    r"\fi",
)
_LATEX_END = (r"\csname rstableend\endcsname",)


def latex_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str,
    align: str | None = None,
    bold: Iterable[tuple[int, int]] = (),
) -> str:
    """A booktabs table that compiles alone with pdflatex and whose tabular a paper can
    ``\\input`` (see ``_LATEX_BEGIN``); pure ASCII. Cells are escaped; ``bold`` lists
    (row, column) positions to set in bold. The caption is a comment above the tabular."""
    bold = set(bold)
    align = align or "l" * len(header)
    lines = [
        r"% " + latex_escape(caption),
        r"% Alone: pdflatex this file. In a paper (booktabs loaded): \input{this file} inside a table.",
        *_LATEX_BEGIN,
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(rows):
        cells = [latex_escape(str(c)) for c in row]
        cells = [rf"\textbf{{{c}}}" if (i, j) in bold else c for j, c in enumerate(cells)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *_LATEX_END, ""]
    return "\n".join(lines)


def best_in_columns(values: Sequence[Sequence[float]], columns: Iterable[int]) -> set[tuple[int, int]]:
    """Positions of the maximum of each listed column (all ties)."""
    marks = set()
    for j in columns:
        col = [row[j] for row in values]
        best = max(col)
        marks |= {(i, j) for i, v in enumerate(col) if v == best}
    return marks


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
    from .schemes import ensemble_label, get_scheme

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
