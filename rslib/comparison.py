"""Paper vs reproduced: the one place where the paper's own numbers appear.

``paper/reported.csv`` holds every number of ``000``'s Tables 1–8, transcribed once with its
table, σ, row, metric and source line. :func:`compare` joins it with the long-format CSVs the
workflow writes for each regenerated table (:func:`rslib.paper_tables.write_table`) on
(table, σ, row, metric): for every cell we regenerate, the paper's value, ours and the difference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from .analysis import latex_table
from .io import atomic_path

KEYS = ["table", "sigma", "row", "metric"]


def _sigma(values: pd.Series) -> pd.Series:
    return values.map(lambda v: f"{float(v):.2f}")


def compare(reported: str | os.PathLike, reproduced: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Cells present in both the paper and our tables: paper, ours, ours − paper, and where our
    value comes from (``origin``: trained here, an imported released checkpoint certified here,
    or a published certification log read as it is)."""
    paper = pd.read_csv(reported, dtype={"sigma": str})
    paper["sigma"] = _sigma(paper["sigma"])
    frames = [pd.read_csv(p, dtype={"sigma": str}) for p in reproduced]
    ours = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEYS, "value", "origin"])
    if "origin" not in ours:
        ours["origin"] = "trained"
    ours["origin"] = ours["origin"].fillna("trained")
    if len(ours):
        ours["sigma"] = _sigma(ours["sigma"])
    merged = paper.merge(ours, on=KEYS, suffixes=("_paper", "_ours"))
    merged = merged.rename(columns={"value_paper": "paper", "value_ours": "ours"})
    merged["difference"] = merged["ours"] - merged["paper"]
    order = {f"table{k}": k for k in range(1, 9)}
    merged = merged.sort_values(by=["table", "sigma", "row", "metric"], key=lambda c: c.map(order) if c.name == "table" else c)
    return merged[[*KEYS, "paper", "ours", "difference", "origin", "source_line"]].reset_index(drop=True)


def write_comparison(
    reported: str | os.PathLike, reproduced: Sequence[str | os.PathLike], datasets: str,
    out_md: str | os.PathLike, out_tex: str | os.PathLike, out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """Markdown, LaTeX and CSV renderings of :func:`compare`; ``datasets`` says what this run
    certified (the demo's digits stand in for CIFAR-10/SVHN/ImageNet and are not comparable)."""
    table = compare(reported, reproduced)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    header = ("| table | σ | row | metric | paper | ours | difference | ours from |\n"
              "|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r.table} | {r.sigma} | {r.row} | {r.metric} | {r.paper:.3f} | {r.ours:.3f} | {r.difference:+.3f} "
             f"| {r.origin} |" for r in table.itertuples()]
    intro = (f"# Paper vs reproduced\n\nPaper values transcribed in `paper/reported.csv` (with their source line in "
             f"the paper); ours computed by this run ({datasets}). Accuracies are fractions, times in hours "
             f"(training) or seconds per image (certification). {len(table)} cells compared. \"ours from\": "
             f"trained (by this run), imported (a released checkpoint certified by this run) or published log "
             f"(a released certification log, restricted to the evaluation images).\n\n")
    with atomic_path(out_md) as tmp, open(tmp, "w") as f:
        f.write(intro + header + "\n".join(lines) + "\n")
    rows = [[r.table, r.sigma, r.row, r.metric, f"{r.paper:.3f}", f"{r.ours:.3f}", f"{r.difference:+.3f}", r.origin]
            for r in table.itertuples()]
    tex = latex_table(["Table", "σ", "Row", "Metric", "Paper", "Ours", "Ours − paper", "Ours from"], rows,
                      caption=f"Paper vs reproduced ({datasets}).", align="llllrrrl")
    with atomic_path(out_tex) as tmp, open(tmp, "w") as f:
        f.write(tex)
    return table
