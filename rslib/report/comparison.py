"""Paper vs reproduced: the one place where the paper's own numbers appear, and whether each was
reproduced within the uncertainty this run can measure.

``paper/reported.csv`` holds every number of ``000``'s Tables 1–8, transcribed once with its
table, σ, row, metric and source line. :func:`compare` joins it with the long-format CSVs the
workflow writes for each regenerated table (:func:`rslib.report.tables.write_table`) on
(table, σ, row, metric) and gives every cell a verdict (:func:`verdict`):

- **not comparable** when the run's configuration differs from the paper's for that cell
  (:func:`configuration_deviations`: another dataset, architecture, evaluation subset,
  CERTIFY parameters, training hyper-parameters or weight-fitting settings), or when a time was
  measured on other hardware than the paper's (``000`` Sec. 4: every time is from one NVIDIA
  V100);
- **identical** when the row comes from a published certification log (the data the paper
  printed, not a new measurement) and ours rounds to the paper's printed value at the paper's
  printed precision (``paper/reported.csv`` keeps each value's printed decimals: ``0.45``,
  ``0.450``, ``0.0``); such a cell is compared exactly, never within an interval;
- **reproduced** when the paper's value lies inside our 95% interval: a seeded percentile
  bootstrap over the evaluated images, which for a trained single-model row with several seeds
  also draws the seed (:func:`rslib.report.metrics.bootstrap_intervals`); times on matching hardware
  when ours/paper is within the configured tolerance;
- **differs** otherwise (a published-log cell that does not round to the printed value, too).

Rows of a method of the user's own (``methods.<name>.module``; their ``deviation`` is
:data:`rslib.experiment.artefacts.NOT_IN_PAPER`) have no paper value: they are listed after the
compared cells, with no paper value, verdict **not comparable** and the reason "not in the paper",
and the Markdown shows them in a section of their own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from rslib.experiment.artefacts import NOT_IN_PAPER, NOT_IN_PAPER_MARK
from rslib.report.latex import latex_table
from rslib.runtime.io import atomic_path

KEYS = ["table", "sigma", "row", "metric"]


#: ``000`` Sec. 4: "We train all models on a single NVIDIA V100 GPU and the training time
#: reported below is all from NVIDIA V100 GPU." A time is comparable only when our provenance
#: records a device with this name.
PAPER_GPU = "V100"


#: Cells that are times (hours of training, seconds of certification per image): compared as
#: ratios, never by bootstrap.
TIME_METRICS = ("train_hours", "certify_seconds")


VERDICTS = ("identical", "reproduced", "differs", "not comparable")


#: The origin of a row read from a published certification log (rslib.experiment.artefacts.ORIGINS).
PUBLISHED = "published log"


COLUMNS = [*KEYS, "paper", "decimals", "ours", "difference", "ratio", "low", "high", "seeds", "seed_mean", "seed_min",
           "seed_max", "verdict", "reason", "origin", "device", "source_line"]


def _is_time(metric: str) -> bool:
    return metric in TIME_METRICS


def printed_decimals(text: str) -> int:
    """Decimals of a value as the paper printed it (``"0.45"`` → 2, ``"0.450"`` → 3, ``"8"`` → 0)."""
    text = str(text).strip()
    return len(text.partition(".")[2]) if "." in text else 0


def rounds_to(ours: float, printed: float, decimals: int) -> bool:
    """Whether ``ours`` rounds to ``printed`` at ``decimals`` decimals, under either tie rule
    (half-up or half-even: the paper does not say which it used), i.e. lies within half a unit
    of the last printed digit."""
    return abs(ours - printed) <= 0.5 * 10.0 ** -decimals + 1e-12


def verdict(cell: Mapping[str, Any], time_tolerance: float) -> tuple[str, str]:
    """(verdict, reason) of one compared cell (a row of :func:`compare` before the verdict):
    not comparable (its ``deviation``, or a time measured off the paper's GPU); for a row from a
    published log, identical (ours rounds to the paper's printed value, ``decimals`` of them) or
    differs; else reproduced (the paper's value in [low, high]; a time with ours/paper in
    [1/(1+tol), 1+tol]) or differs."""
    reasons = [cell["deviation"]] if isinstance(cell.get("deviation"), str) and cell["deviation"] else []
    paper, ours = float(cell["paper"]), float(cell["ours"])
    if _is_time(cell["metric"]):
        device = cell.get("device") if isinstance(cell.get("device"), str) else ""
        if PAPER_GPU not in device:
            reasons.append(f"hardware {device or 'not recorded'} (the paper: NVIDIA {PAPER_GPU})")
    if reasons:
        return "not comparable", "; ".join(reasons)
    if cell.get("origin") == PUBLISHED and not _is_time(cell["metric"]):
        decimals = int(cell["decimals"])
        same = rounds_to(ours, paper, decimals)
        return ("identical" if same else "differs"), (
            f"published log: ours {ours:.{decimals + 1}f} {'rounds' if same else 'does not round'} to the paper's "
            f"{paper:.{decimals}f} ({decimals} decimals as printed)")
    if _is_time(cell["metric"]):
        ratio = ours / paper
        inside = 1.0 / (1.0 + time_tolerance) <= ratio <= 1.0 + time_tolerance
        return ("reproduced" if inside else "differs"), f"ours/paper = {ratio:.2f} (tolerance ×{1 + time_tolerance:g})"
    low, high = cell.get("low"), cell.get("high")
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return "not comparable", "no interval for this cell"
    where = "inside" if low <= paper <= high else "outside"
    return ("reproduced" if where == "inside" else "differs"), f"paper {paper:.3f} {where} [{low:.3f}, {high:.3f}]"


def read_reported(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's numbers (``paper/reported.csv``: table, sigma, row, metric, value, source_line)
    with σ as tables write it and each value's printed decimals (``decimals``)."""
    paper = pd.read_csv(path, dtype={"sigma": str, "value": str})  # values as printed: their decimals count
    paper["decimals"] = paper["value"].map(printed_decimals)
    paper["value"] = paper["value"].astype(float)
    paper["sigma"] = _sigma(paper["sigma"])
    return paper


def compare(reported: str | os.PathLike, reproduced: Sequence[str | os.PathLike],
            time_tolerance: float = 0.25) -> pd.DataFrame:
    """Cells present in both the paper and our tables: paper, ours (the first seed, as the table
    shows it), ours − paper (ours/paper for times), our interval and seed spread, the verdict and
    its reason, and where our value comes from (``origin``: trained here, an imported released
    checkpoint certified here, or a published certification log read as it is). Then the cells
    of the user's own methods' rows (:func:`own_rows`): no paper value, not comparable."""
    paper = read_reported(reported)
    frames = [pd.read_csv(p, dtype={"sigma": str, "deviation": str, "device": str}) for p in reproduced]
    frames = [f for f in frames if len(f)]
    ours = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEYS, "value"])
    for column, default in (("origin", "trained"), ("deviation", ""), ("device", "")):
        if column not in ours:
            ours[column] = default
        ours[column] = ours[column].fillna(default)
    for column in ("low", "high", "seeds", "seed_mean", "seed_min", "seed_max"):
        if column not in ours:
            ours[column] = float("nan")
    if len(ours):
        ours["sigma"] = _sigma(ours["sigma"])
    own = ours[ours["deviation"] == NOT_IN_PAPER]
    ours = ours[ours["deviation"] != NOT_IN_PAPER]
    merged = paper.merge(ours, on=KEYS, suffixes=("_paper", "_ours"))
    merged = merged.rename(columns={"value_paper": "paper", "value_ours": "ours"})
    merged["difference"] = merged["ours"] - merged["paper"]
    merged["ratio"] = [o / p if _is_time(m) and p else float("nan")
                       for o, p, m in zip(merged["ours"], merged["paper"], merged["metric"])]
    judged = [verdict(row, time_tolerance) for row in merged.to_dict("records")]
    merged["verdict"] = [v for v, _ in judged]
    merged["reason"] = [r for _, r in judged]
    merged = _sorted(merged)[COLUMNS].reset_index(drop=True)
    if not len(own):
        return merged
    own = _sorted(own.rename(columns={"value": "ours"})).assign(
        paper=float("nan"), decimals=float("nan"), difference=float("nan"), ratio=float("nan"),
        verdict="not comparable", reason=NOT_IN_PAPER, source_line="")
    return pd.concat([merged, own[COLUMNS]], ignore_index=True)


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells in the paper's table order, then by σ, row and metric."""
    order = {f"table{k}": k for k in range(1, 9)}
    return cells.sort_values(by=["table", "sigma", "row", "metric"],
                             key=lambda c: c.map(order) if c.name == "table" else c)


def own_rows(table: pd.DataFrame) -> pd.Series:
    """Which cells of :func:`compare` belong to rows of the user's own methods (no paper value)."""
    return table["paper"].isna()


def _sigma(values: pd.Series) -> pd.Series:
    return values.map(lambda v: f"{float(v):.2f}")


def _distinct_reasons(reasons: pd.Series, most: int = 3) -> str:
    """The distinct single reasons of some cells (a cell's reason may join several with "; "),
    in order of first appearance, the first ``most`` of them."""
    single = list(dict.fromkeys(part for reason in reasons for part in str(reason).split("; ")))
    return "; ".join(single[:most]) + (f"; and {len(single) - most} more" if len(single) > most else "")


def verdict_counts(cells: pd.DataFrame) -> str:
    """The verdicts of some cells in words: "12 of 12 published-log cells identical; 27 of 30 cells
    reproduced, 3 differ; 2 not comparable" (each part only when it has cells)."""
    published = cells["origin"] == PUBLISHED
    identical = int((cells["verdict"] == "identical").sum())
    published_differ = int(((cells["verdict"] == "differs") & published).sum())
    reproduced = int((cells["verdict"] == "reproduced").sum())
    differ = int(((cells["verdict"] == "differs") & ~published).sum())
    not_comparable = int((cells["verdict"] == "not comparable").sum())
    parts = []
    if identical + published_differ:
        parts.append(f"{identical} of {identical + published_differ} published-log cells identical"
                     + (f", {published_differ} differ" if published_differ else ""))
    if reproduced + differ:
        parts.append(f"{reproduced} of {reproduced + differ} cells reproduced, {differ} differ")
    if not_comparable:
        parts.append(f"{not_comparable} not comparable")
    return "; ".join(parts)


def summarize_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per table of the paper: cells compared, identical (published logs), reproduced,
    differing, not comparable, and the line that heads ``comparison.md`` ("Table 5: 9 of 9
    published-log cells identical; 27 of 30 cells reproduced, 3 differ"). Cells of rows not in
    the paper (:func:`own_rows`) are counted apart, in the line only."""
    rows = []
    for k in range(1, 9):
        in_table = table[table["table"] == f"table{k}"]
        cells, own = in_table[~own_rows(in_table)], int(own_rows(in_table).sum())
        counts = {v: int((cells["verdict"] == v).sum()) for v in VERDICTS}
        if not len(cells):
            line = f"Table {k}: no cell regenerated by this run"
        elif counts["not comparable"] == len(cells):
            line = f"Table {k}: none of {len(cells)} cells comparable ({_distinct_reasons(cells['reason'])})"
        else:
            line = f"Table {k}: {verdict_counts(cells)}"
        if own:
            line += f"; {own} cells of rows not in the paper"
        rows.append({"table": f"table{k}", "cells": len(cells), **{v.replace(" ", "_"): n for v, n in counts.items()},
                     "summary": line})
    return pd.DataFrame.from_records(rows, columns=["table", "cells", "identical", "reproduced", "differs",
                                                    "not_comparable", "summary"])


def _printed(r: Any) -> str:
    """The paper's value as the paper printed it (its decimals); – for a row not in the paper."""
    return "–" if math.isnan(r.paper) else f"{r.paper:.{int(r.decimals)}f}"


def _interval(r: Any) -> str:
    return "" if math.isnan(r.low) else f"[{r.low:.3f}, {r.high:.3f}]"


def _seed_spread(r: Any) -> str:
    if math.isnan(r.seeds) or r.seeds < 2:
        return ""
    return f"{r.seed_mean:.3f} [{r.seed_min:.3f}, {r.seed_max:.3f}] ({int(r.seeds)})"


def _change(r: Any) -> str:
    if math.isnan(r.paper):
        return "–"
    return f"×{r.ratio:.2f}" if _is_time(r.metric) else f"{r.difference:+.3f}"


def _own_section(own: pd.DataFrame, pct: str) -> str:
    """The Markdown section of the rows of the user's own methods ("" when there are none): our
    values next to the paper's rows of the same tables, with nothing to compare them with."""
    if not len(own):
        return ""
    lines = [f"| {r.table} | {r.sigma} | {r.row} | {r.metric} | {r.ours:.3f} | {_interval(r)} | {_seed_spread(r)} "
             f"| {r.origin} |" for r in own.itertuples()]
    return (f"\n## Rows not in the paper\n\nMethods of this run's own (`methods.<name>.module`, marked ¶ in the "
            f"tables): the paper has no value for them, so each of their {len(own)} cells is **not comparable** "
            f"(reason: {NOT_IN_PAPER}). The tables list these rows after the paper's.\n\n"
            f"| table | σ | row | metric | ours | {pct} interval | seeds: mean [min, max] (n) | ours from |\n"
            f"|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def write_comparison(
    reported: str | os.PathLike, reproduced: Sequence[str | os.PathLike], datasets: str,
    out_md: str | os.PathLike, out_tex: str | os.PathLike, out_csv: str | os.PathLike,
    out_summary: str | os.PathLike, *, time_tolerance: float = 0.25, level: float = 0.95,
) -> pd.DataFrame:
    """Markdown, LaTeX and CSV renderings of :func:`compare`, and the per-table verdict summary
    (CSV, also the head of the Markdown); ``datasets`` says what this run certified."""
    table = compare(reported, reproduced, time_tolerance)
    summary = summarize_verdicts(table)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_summary) as tmp:
        summary.to_csv(tmp, index=False)
    pct = f"{100 * level:g}%"
    own = table[own_rows(table)]
    compared = table[~own_rows(table)]
    if len(compared) and (compared["verdict"] == "not comparable").all():
        headline = (f"**No cell of this run is comparable with the paper**: "
                    f"{_distinct_reasons(compared['reason'], most=6)}.")
    else:
        headline = f"**{verdict_counts(compared) or 'no cell compared'}.**"
    header = (f"| table | σ | row | metric | paper | ours | ours − paper | {pct} interval | seeds: mean [min, max] (n) "
              f"| verdict | reason | ours from |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r.table} | {r.sigma} | {r.row} | {r.metric} | {_printed(r)} | {r.ours:.3f} | {_change(r)} "
             f"| {_interval(r)} | {_seed_spread(r)} | {r.verdict} | {r.reason} | {r.origin} |"
             for r in compared.itertuples()]
    intro = (f"# Paper vs reproduced\n\n{headline}\n\n" + "\n".join(f"- {line}" for line in summary["summary"])
             + f"\n\nPaper values transcribed in `paper/reported.csv` (with their source line in the paper); ours "
             f"computed by this run ({datasets}). Accuracies are fractions, times in hours (training) or seconds "
             f"per image (certification). {len(compared)} cells compared.\n\n"
             f"*Verdicts.* **identical**: a row read from a published certification log (the data the paper "
             f"printed) whose value rounds to the paper's at the paper's printed precision; such cells are compared "
             f"exactly, with no interval. **reproduced**: for rows this run certified, the paper's value lies inside our {pct} interval, a seeded percentile "
             f"bootstrap over the evaluated images that, for a trained single-model row with several seeds, also "
             f"draws the seed (the table shows the first seed; mean, min and max over seeds are listed). Times are "
             f"compared as ratios: reproduced within ×{1 + time_tolerance:g} either way, and only when measured on "
             f"the paper's GPU (NVIDIA {PAPER_GPU}). **not comparable**: this run's configuration differs from the "
             f"paper's (config.yaml) for that cell, or a time was measured on other hardware; the reason names the "
             f"difference. **differs**: otherwise. \"ours from\": trained (by this run), imported (a released "
             f"checkpoint certified by this run) or published log (a released certification log, restricted to the "
             f"evaluation images).\n\n")
    with atomic_path(out_md) as tmp, open(tmp, "w") as f:
        f.write(intro + header + "\n".join(lines) + "\n" + _own_section(own, pct))
    rows = [[r.table, r.sigma, r.row + (NOT_IN_PAPER_MARK if math.isnan(r.paper) else ""), r.metric, _printed(r),
             f"{r.ours:.3f}", _change(r), _interval(r), r.verdict, r.origin] for r in table.itertuples()]
    tex = latex_table(["Table", "σ", "Row", "Metric", "Paper", "Ours", "Ours − paper", f"{pct} interval", "Verdict",
                       "Ours from"], rows,
                      caption=f"Paper vs reproduced ({datasets}). " + " ".join(summary["summary"]),
                      align="llllrrrlll")
    with atomic_path(out_tex) as tmp, open(tmp, "w") as f:
        f.write(tex)
    return table
