"""The paper's Tables 1–8 (``000``), laid out like the paper, from the workflow's own
certificates, training curves and timings — and nothing else.

:func:`build_table` turns the statistics of an artefact's sources
(:mod:`rslib.experiment.artefacts`) into a booktabs table and a long-format record list (table,
sigma, row, metric, value) that the paper-vs-reproduced comparison (:mod:`rslib.report.comparison`)
matches against the paper's reported numbers; :func:`write_table` reads the certificates and
writes both."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rslib.ensembles.schemes import SCHEMES
from rslib.experiment.artefacts import (
    NOT_IN_PAPER_NOTE,
    ORIGIN_MARKS,
    ORIGIN_NOTE,
    ORIGINS,
    TABLE_RADII,
    Artefact,
    Source,
    artefact,
    member_sources,
)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]]
    caption: str
    records: list[dict[str, Any]]  # long format: table, sigma, row, metric, value
    align: str | None = None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _record(table: str, sigma: str, row: str, metric: str, value: float, src: Source) -> dict[str, Any]:
    """One cell in long format; ``source`` stays in memory (write_table adds its interval, seed
    spread and comparability from it) and is not written."""
    return {"table": table, "sigma": sigma, "row": row, "metric": metric, "value": float(value), "origin": src.origin,
            "source": src}


#: Columns of the long-format CSV beside each table (the comparison's input): the cell's value
#: (the first seed's, as the table shows it), its origin, its bootstrap interval (``low``,
#: ``high``; image-mean statistics only), the seed spread of a trained single-model row
#: (``seeds``, ``seed_mean``, ``seed_min``, ``seed_max``), why the cell is not comparable with
#: the paper (``deviation``, empty when it is) and, for times, the device that measured them.
RECORD_COLUMNS = ["table", "sigma", "row", "metric", "value", "origin", "low", "high", "seeds", "seed_mean",
                  "seed_min", "seed_max", "deviation", "device"]


class _Cells:
    """Formats a source's statistics as the table shows them: the first seed's value, or with
    ``spread`` (``paper.seed_statistics``) the mean ± sd over the seeds of a trained single-model
    row. ``value`` is what bold compares (the shown number)."""

    def __init__(self, stats: Mapping[Source, Mapping[str, float]],
                 spread: Mapping[Source, Mapping[str, tuple[float, float]]] | None):
        self.stats, self.spread = stats, spread or {}

    def value(self, src: Source, key: str) -> float:
        return self.spread[src][key][0] if src in self.spread else self.stats[src][key]

    def text(self, src: Source, key: str, percent: bool = False) -> str:
        if src not in self.spread:
            return _pct(self.stats[src][key]) if percent else f"{self.stats[src][key]:.3f}"
        mean, sd = self.spread[src][key]
        return f"{100 * mean:.1f}±{100 * sd:.1f}%" if percent else f"{mean:.3f}±{sd:.3f}"


def _time_cell(src: Source, hours: float | None, missing: str = "–") -> str:
    """A training-time cell: measured hours, or what the row is when the workflow did not train it."""
    if src.single and src.origin != "trained":
        return src.origin
    return f"{hours:.2f}h" if hours is not None else missing


def _origin_note(sources: Sequence[Source]) -> str:
    """The caption's notes on the marks its rows carry: origins, and methods not in the paper."""
    notes = [ORIGIN_NOTE[o] for o in ORIGINS[1:] if any(s.single and s.origin == o for s in sources)]
    notes += [NOT_IN_PAPER_NOTE] if any(not s.in_paper for s in sources) else []
    return (" " + "; ".join(notes) + ".") if notes else ""


def _best(values: list[list[float | None]], column_offset: int) -> set[tuple[int, int]]:
    """(row, column) of the largest value in each column (all ties bold); None = empty cell."""
    bold = set()
    for j in range(len(values[0]) if values else 0):
        col = [v[j] for v in values if v[j] is not None]
        if col:
            top = max(col)
            bold |= {(i, j + column_offset) for i, v in enumerate(values) if v[j] is not None and v[j] == top}
    return bold


@dataclass
class Layout:
    """What a table builder reads and writes: the artefact, its sources with their statistics
    (as ``cells`` shows them) and, where its layout has them, training hours, hyper-parameters
    and certification seconds; ``records`` collects the long-format cells for the comparison."""

    artefact: Artefact
    sources: Sequence[Source]
    stats: Mapping[Source, Mapping[str, float]]
    cells: _Cells
    train_hours: Mapping[Source, float]
    hparams: Mapping[Source, Mapping[str, Any]]
    certify_seconds: Mapping[Source, float]
    records: list[dict[str, Any]] = field(default_factory=list)

    def record(self, sigma: str, row: str, metric: str, value: float, src: Source) -> None:
        self.records.append(_record(self.artefact.name, sigma, row, metric, value, src))


#: A builder lays out one artefact: (header, rows, bold cells, caption).
Builder = Callable[[Layout], tuple[list[str], list[list[str]], set[tuple[int, int]], str]]


def _acr_by_sigma(t: Layout, with_time: bool = False) -> tuple:
    """Tables 1 and 4: a row per method or ensemble, a column per σ: ACR (clean accuracy); Table 4
    adds the mean training hours per model."""
    sigmas = sorted({s.sigma for s in t.sources})
    labels = list(dict.fromkeys(s.label for s in t.sources))
    by = {(s.label, s.sigma): s for s in t.sources}
    header = ["Methods", *[f"σ={float(s):g}" for s in sigmas]] + (["Time"] if with_time else [])
    rows, values = [], []
    for label in labels:
        row_sources = [by[(label, s)] for s in sigmas if (label, s) in by]
        uniform = len({r.origin for r in row_sources}) == 1  # one origin: marked on the label; mixed: on each cell
        row_cells, vals = [row_sources[0].marked_label if uniform else label + row_sources[0].paper_mark], []
        for sigma in sigmas:
            src = by.get((label, sigma))
            if src is None:
                row_cells.append("–")
                vals.append(None)
                continue
            row_cells.append(f"{t.cells.text(src, 'acr')} ({t.cells.text(src, 'accuracy', percent=True)})"
                             + ("" if uniform else ORIGIN_MARKS[src.origin]))
            vals.append(t.cells.value(src, "acr"))
            t.record(sigma, label, "acr", t.stats[src]["acr"], src)
            t.record(sigma, label, "accuracy", t.stats[src]["accuracy"], src)
        if with_time:
            hours = [t.train_hours[r] for r in row_sources if r in t.train_hours]
            untrained = sorted({r.origin for r in row_sources if r.origin != "trained"})
            row_cells.append(f"{sum(hours) / len(hours):.2f}h" if hours else ", ".join(untrained) or "–")
            for r in row_sources:
                if r in t.train_hours:
                    t.record(r.sigma, label, "train_hours", t.train_hours[r], r)
        rows.append(row_cells)
        values.append(vals)
    caption = (f"ACR with clean accuracy in parentheses"
               f"{'; Time = mean training hours per model' if with_time else ''}; best ACR in bold.")
    return header, rows, _best(values, 1), caption


def _training_cost(t: Layout) -> tuple:
    """Table 2: T, m, ε, epochs, ACR and training time per model and σ."""
    header = ["Models", "T", "m", "ε", "Epochs", "ACR", "Time"]
    rows = []
    for src in t.sources:
        h = t.hparams.get(src, {})
        hours = t.train_hours.get(src)
        is_macer = src.name == "macer"
        rows.append([f"{src.marked_label} (σ={float(src.sigma):.2f})",
                     "NA" if is_macer else str(h.get("attack_steps", "–")), str(h.get("num_noise_vec", "–")),
                     "NA" if is_macer else (f"{h['epsilon']:g}" if "epsilon" in h else "–"), str(h.get("epochs", "–")),
                     t.cells.text(src, "acr"), _time_cell(src, hours)])
        t.record(src.sigma, src.label, "acr", t.stats[src]["acr"], src)
        if hours is not None:
            t.record(src.sigma, src.label, "train_hours", hours, src)
    caption = "Model configuration and training cost (training hours measured by the workflow); ACR for comparison."
    return header, rows, set(), caption


def _ensemble_weights(t: Layout) -> tuple:
    """Table 3: the single model against its 2-ensembles under each weight scheme: accuracy, ACR,
    certification time per image."""
    header = ["Model", "Accuracy", "ACR", "Certificate time"]
    rows, values = [], []
    for src in t.sources:
        label = ("AdvMacer (no ensemble)" + ORIGIN_MARKS[src.origin] if src.single
                 else SCHEMES[src.scheme].label + ("" if SCHEMES[src.scheme].sound else " †"))
        row_key = "AdvMacer" if src.single else src.scheme
        seconds = t.certify_seconds.get(src)
        rows.append([label, t.cells.text(src, "accuracy"), t.cells.text(src, "acr"),
                     f"{seconds:.2f}s" if seconds is not None else "–"])
        values.append([t.cells.value(src, "accuracy"), t.cells.value(src, "acr")])
        t.record(src.sigma, row_key, "accuracy", t.stats[src]["accuracy"], src)
        t.record(src.sigma, row_key, "acr", t.stats[src]["acr"], src)
        if seconds is not None:
            t.record(src.sigma, row_key, "certify_seconds", seconds, src)
    caption = (f"Weighted 2-ensembles of AdvMacer at σ={float(t.sources[0].sigma):.2f}: clean accuracy, ACR and "
               "certification time per image (ensembles: members' forward passes plus the reduction). "
               "† weights depend on the test point (not a sound certificate).")
    return header, rows, _best(values, 1), caption


def _certified_accuracy(t: Layout) -> tuple:
    """Tables 5-7: certified accuracy at the artefact's radii and ACR, one σ."""
    sigma = t.sources[0].sigma
    keys = [*[f"r={r:g}" for r in t.artefact.radii], "acr"]
    header = ["Model", *[f"{r:.2f}" for r in t.artefact.radii], "ACR"]
    rows, values = [], []
    for src in t.sources:
        rows.append([src.marked_label, *[t.cells.text(src, k) for k in keys]])
        values.append([t.cells.value(src, k) for k in keys])
        for k in keys:
            t.record(sigma, src.label, k, t.stats[src][k], src)
    caption = f"Certified accuracy at each L2 radius and ACR, σ={float(sigma):.2f}; best per column in bold."
    return header, rows, _best(values, 1), caption


def _accuracy_acr_time(t: Layout) -> tuple:
    """Table 8: per σ, clean accuracy, ACR and training time of singles and ensembles."""
    header = ["σ", "Model", "Accuracy", "ACR", "Training time"]
    rows, values = [], []
    for src in t.sources:
        hours = t.train_hours.get(src)
        rows.append([f"{float(src.sigma):.2f}", src.marked_label, t.cells.text(src, "accuracy", percent=True),
                     t.cells.text(src, "acr"), _time_cell(src, hours, missing="NA")])
        values.append([t.cells.value(src, "accuracy"), t.cells.value(src, "acr")])
        t.record(src.sigma, src.label, "accuracy", t.stats[src]["accuracy"], src)
        t.record(src.sigma, src.label, "acr", t.stats[src]["acr"], src)
        if hours is not None:
            t.record(src.sigma, src.label, "train_hours", hours, src)
    bold: set[tuple[int, int]] = set()
    for sigma in sorted({s.sigma for s in t.sources}):
        idx = [i for i, s in enumerate(t.sources) if s.sigma == sigma]
        bold |= {(idx[i], j) for i, j in _best([values[i] for i in idx], 2)}
    caption = "Clean accuracy, ACR and training time (ensembles: NA, as in the paper); best per σ in bold."
    return header, rows, bold, caption


#: The table builder of each layout of the registry (:data:`rslib.experiment.artefacts.ARTEFACTS`).
BUILDERS: dict[str, Builder] = {
    "acr_by_sigma": _acr_by_sigma,
    "acr_by_sigma_with_time": lambda t: _acr_by_sigma(t, with_time=True),
    "training_cost": _training_cost,
    "ensemble_weights": _ensemble_weights,
    "certified_accuracy": _certified_accuracy,
    "svhn": _accuracy_acr_time,
}


def build_table(
    name: str,
    sources: Sequence[Source],
    stats: Mapping[Source, Mapping[str, float]],
    *,
    train_hours: Mapping[Source, float] | None = None,
    hparams: Mapping[Source, Mapping[str, Any]] | None = None,
    certify_seconds: Mapping[Source, float] | None = None,
    dataset: str | None = None,
    note: str = "",
    spread: Mapping[Source, Mapping[str, tuple[float, float]]] | None = None,
) -> Table:
    """Lay out table ``name`` (``table1`` … ``table8``) like the paper, with the builder of its
    layout (:data:`BUILDERS`), from per-source statistics (:func:`rslib.report.metrics.summarize`:
    ``acr``, ``accuracy``, ``r=<radius>``).

    ``train_hours`` (singles) feed Tables 2, 4, 8; ``hparams`` Table 2's T, m, ε, epochs;
    ``certify_seconds`` (per image, ensembles including their members' forward passes) Table 3.
    Best value per column in bold, as in the paper. ``spread`` (source → statistic → (mean, sd)
    over seeds) shows those rows as mean ± sd instead of the first seed's value.
    """
    table = artefact(name)
    if table.kind != "table":
        raise ValueError(f"{name} is not a table")
    where = f" Dataset: {dataset} (the paper: {table.paper_dataset})." if dataset else ""
    if not sources:
        return Table(["Note"], [[f"nothing to report: the configuration provides no input for {name}.{note}"]],
                     set(), f"{name}: skipped.{where}{note}", [])
    layout = Layout(table, sources, stats, _Cells(stats, spread), train_hours or {}, hparams or {},
                    certify_seconds or {})
    header, rows, bold, caption = BUILDERS[table.layout](layout)
    spread_note = " Rows with ± show mean ± sd over trained seeds." if spread else ""
    return Table(header, rows, bold, caption + where + _origin_note(sources) + spread_note + note, layout.records)


# ---------------------------------------------------------------------------------------------
# Entry points of the workflow scripts
# ---------------------------------------------------------------------------------------------
def _mean_time(path: str) -> float:
    from rslib.certification.tsv import read_certificates

    return float(read_certificates(path)["time"].mean())


def _devices(record_paths: Sequence[str], what: str) -> str:
    """The device(s) a time was measured on, from the ``certify.json`` beside each certificate:
    the training device of a model (``what="train"``) or the certification device(s)."""
    import json

    found: list[str] = []
    for path in record_paths:
        rec = json.loads(open(path).read())
        if what == "train":
            found.append(((rec.get("model") or {}).get("provenance") or {}).get("device") or "")
        elif "shards" in rec:  # a model's certificate: one record per shard
            found += [shard.get("device") or "" for shard in rec["shards"]]
        else:  # an ensemble certificate or a published log
            found.append((rec.get("provenance") or {}).get("device") or "")
    return "; ".join(sorted({d for d in found if d}))


@dataclass(frozen=True)
class Uncertainty:
    """How write_table attaches uncertainty to each cell (config ``report.bootstrap`` and
    ``paper.seed_statistics``): a seeded percentile bootstrap (:func:`rslib.report.metrics.bootstrap_intervals`)."""

    replicates: int = 2000
    level: float = 0.95
    seed: int = 0
    seed_statistics: bool = False  # show mean ± sd over seeds in the LaTeX table


def write_table(
    name: str,
    sources: Sequence[Source],
    certificates: Sequence[str],
    curves: Sequence[str],
    hparams: Sequence[Mapping[str, Any]],
    members: Sequence[Source],
    member_certificates: Sequence[str],
    dataset: str | None,
    out_tex: str,
    out_csv: str,
    *,
    seed_certificates: Sequence[Sequence[str]] | None = None,
    records: Sequence[str] | None = None,
    member_records: Sequence[str] | None = None,
    deviations: Sequence[str] | None = None,
    uncertainty: Uncertainty = Uncertainty(),
) -> Table:
    """Build table ``name`` from its sources' certificates (and, for singles, training curves) and
    write the standalone LaTeX table and its long-format CSV (the comparison's input).

    ``seed_certificates`` (per source: the certificates of a trained single-model row's further
    seeds, [] otherwise) give the seed spread and widen the bootstrap interval over seeds;
    ``records`` / ``member_records`` are the ``certify.json`` beside each certificate (the devices
    behind time cells); ``deviations`` (per source) say why its cells are not comparable with the
    paper ("" when they are).
    """
    import numpy as np
    import pandas as pd

    from rslib.certification.tsv import read_certificates
    from rslib.report.latex import latex_table
    from rslib.report.metrics import bootstrap_intervals, summarize
    from rslib.runtime.io import atomic_path

    seed_certificates = seed_certificates or [[] for _ in sources]
    # each certificate read once: the first is the table's cell, all give the seed spread and interval
    frames = {s: [read_certificates(p) for p in [path, *more]]
              for s, path, more in zip(sources, certificates, seed_certificates)}
    per_seed = {s: [summarize(df, TABLE_RADII) for df in f] for s, f in frames.items()}
    stats = {s: values[0] for s, values in per_seed.items()}
    trained = [s for s in sources if s.has_curve]
    train_hours = {s: float(pd.read_csv(c)["train_seconds"].iloc[-1]) / 3600.0 for s, c in zip(trained, curves)}
    # Table 3: an ensemble's time is its reduction plus every member's forward passes
    member_seconds = {(m.dataset, m.sigma, m.name, m.seed): _mean_time(p) for m, p in zip(members, member_certificates)}
    seeds: dict[str, list[int]] = {}
    for m in members:  # in configured seed order (see rules/common.smk: artefact_members)
        if m.seed not in seeds.setdefault(m.name, []):
            seeds[m.name].append(m.seed)
    certify_seconds = {}
    for s in sources:
        own = float(frames[s][0]["time"].mean())
        if s.single:
            certify_seconds[s] = own
        elif members:
            certify_seconds[s] = own + sum(
                member_seconds[(m.dataset, m.sigma, m.name, m.seed)] for m in member_sources(s, seeds))
    # uncertainty: bootstrap over images (and seeds), and the seed spread of trained singles
    # a published log is the data the paper printed: compared exactly (rslib.report.comparison), no interval
    intervals = {s: bootstrap_intervals(f, TABLE_RADII, replicates=uncertainty.replicates, level=uncertainty.level,
                                        seed=uncertainty.seed) for s, f in frames.items() if s.origin != "published log"}
    spread = {s: {k: (float(np.mean([v[k] for v in vals])), float(np.std([v[k] for v in vals], ddof=1)))
                  for k in vals[0]}
              for s, vals in per_seed.items() if len(vals) > 1} if uncertainty.seed_statistics else None
    note = ""
    if dataset is not None and artefact(name).sigma is not None and not sources:
        note = f" σ={artefact(name).sigma} is not configured for {dataset} in this run."
    table = build_table(name, sources, stats, train_hours=train_hours,
                        hparams=dict(zip(sources, hparams)), certify_seconds=certify_seconds,
                        dataset=dataset, note=note, spread=spread)
    deviation = dict(zip(sources, deviations or ["" for _ in sources]))
    record_of = dict(zip(sources, records or []))
    member_record_of = {(m.dataset, m.sigma, m.name, m.seed): r for m, r in zip(members, member_records or [])}
    for rec in table.records:
        src = rec.pop("source")
        rec["deviation"] = deviation[src]
        metric = rec["metric"]
        if metric in per_seed[src][0]:  # an image-mean statistic
            if src in intervals:
                rec["low"], rec["high"] = intervals[src][metric]
            values = [v[metric] for v in per_seed[src]]
            rec.update(seeds=len(values), seed_mean=float(np.mean(values)), seed_min=min(values),
                       seed_max=max(values))
        elif src in record_of:  # a time: where it was measured
            paths = [record_of[src]]
            if metric == "certify_seconds" and not src.single:
                paths += [member_record_of[(m.dataset, m.sigma, m.name, m.seed)] for m in member_sources(src, seeds)
                          if (m.dataset, m.sigma, m.name, m.seed) in member_record_of]
            rec["device"] = _devices(paths, "train" if metric == "train_hours" else "certify")
    with atomic_path(out_tex) as tmp, open(tmp, "w") as f:
        f.write(latex_table(table.header, table.rows, caption=table.caption, bold=table.bold))
    with atomic_path(out_csv) as tmp:
        pd.DataFrame.from_records(table.records, columns=RECORD_COLUMNS).to_csv(tmp, index=False)
    return table
