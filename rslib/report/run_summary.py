"""The summary a person reads at the end of a run (``make demo`` prints it): one compact table of
every certified model and ensemble, the comparison's verdict per table of the paper, where the
artefacts are, and how long each stage took.

    python -m rslib.report.run_summary results/demo [--wall-seconds 412]

It reads only what the workflow wrote: ``certified_accuracy.csv``, ``ensembles.csv``,
``comparison_summary.csv`` and the Snakemake ``benchmark:`` files under ``benchmarks/`` (one per
job: its wall seconds). The CSVs keep full precision for machines; here ACR and accuracies have
3 decimals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from rslib.runtime.progress import format_duration

#: The stage each rule belongs to (by the first folder of its benchmark file under benchmarks/).
STAGES: dict[str, tuple[str, ...]] = {
    "data": ("prepare_data",),
    "training": ("train", "import_model"),
    "certification": ("certify", "merge_certificates", "import_certification_log"),
    "ensembles": ("member_outputs", "pseudo_outputs", "fit_ensemble_weights", "certify_ensemble", "certify_adaptive"),
    "tables, figures, costs": ("paper", "summary", "ensemble_summary", "measure_costs", "cost_estimate"),
}


BEST = "*"


def result_rows(results: Path) -> pd.DataFrame:
    """One row per certified model (``certified_accuracy.csv``) and ensemble (``ensembles.csv``):
    dataset, sigma, kind, name, accuracy, acr."""
    frames = []
    models = results / "certified_accuracy.csv"
    if models.is_file():
        m = pd.read_csv(models)
        frames.append(pd.DataFrame({"dataset": m["dataset"], "sigma": m["sigma"], "kind": "model",
                                    "name": m["method"] + " seed " + m["seed"].astype(str),
                                    "accuracy": m["accuracy"], "acr": m["acr"]}))
    ensembles = results / "ensembles.csv"
    if ensembles.is_file() and ensembles.stat().st_size > 1:  # a run without ensembles writes a bare newline
        e = pd.read_csv(ensembles)
        if len(e):
            unsound = e["sound"].map(lambda s: "" if s in (True, "True") else " (†: not sound)")
            frames.append(pd.DataFrame({"dataset": e["dataset"], "sigma": e["sigma"], "kind": "ensemble",
                                        "name": e["label"] + ", " + e["scheme"] + unsound,
                                        "accuracy": e["accuracy"], "acr": e["acr"]}))
    if not frames:
        return pd.DataFrame(columns=["dataset", "sigma", "kind", "name", "accuracy", "acr"])
    return pd.concat(frames, ignore_index=True)


def compact_table(rows: pd.DataFrame) -> str:
    """Rows grouped by dataset and σ, ACR and accuracy with 3 decimals; ``*`` marks the best of
    each column within its (dataset, σ) group (ties all marked)."""
    if not len(rows):
        return "(no certificates)"
    width = max(len("model / ensemble"), *(len(n) for n in rows["name"]))
    lines = [f"{'dataset':8s} {'sigma':>5s}  {'model / ensemble':{width}s}  {'accuracy':>9s}  {'ACR':>7s}"]
    for (dataset, sigma), group in rows.groupby(["dataset", "sigma"], sort=False):
        lines.append("-" * len(lines[0]))
        best_acc, best_acr = group["accuracy"].max(), group["acr"].max()
        for r in group.itertuples():
            acc = f"{r.accuracy:.3f}" + (BEST if r.accuracy == best_acc else " ")
            acr = f"{r.acr:.3f}" + (BEST if r.acr == best_acr else " ")
            lines.append(f"{dataset:8s} {sigma:5.2f}  {r.name:{width}s}  {acc:>9s}  {acr:>7s}")
    lines.append(f"{BEST} best in its column at that dataset and sigma; accuracy: certified accuracy at radius 0 "
                 "(clean accuracy of the smoothed classifier).")
    return "\n".join(lines)


def stage_seconds(results: Path) -> pd.DataFrame:
    """Per stage: jobs and their summed wall seconds, from the jobs' ``benchmark:`` files."""
    stage_of = {rule: stage for stage, rules in STAGES.items() for rule in rules}
    totals: dict[str, list[float]] = {stage: [] for stage in STAGES}
    folder = results / "benchmarks"
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else []:
        first = path.relative_to(folder).parts[0].removesuffix(".tsv")
        stage = stage_of.get(first)
        if stage is None:
            continue
        try:
            seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[0])
        except (KeyError, IndexError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue  # a benchmark file of an interrupted job
        totals[stage].append(seconds)
    return pd.DataFrame([{"stage": s, "jobs": len(t), "seconds": sum(t)} for s, t in totals.items()])


def stage_lines(stages: pd.DataFrame, wall_seconds: float | None) -> str:
    lines = [f"  {r.stage:24s} {r.jobs:4d} jobs  {format_duration(r.seconds):>8s}" for r in stages.itertuples() if r.jobs]
    total = f"  {'all jobs (summed)':24s} {int(stages['jobs'].sum()):4d} jobs  {format_duration(stages['seconds'].sum()):>8s}"
    lines.append(total)
    if wall_seconds is not None:
        lines.append(f"  {'wall time of this run':24s}            {format_duration(wall_seconds):>8s}"
                     "  (jobs run in parallel; jobs of earlier runs are counted above)")
    return "\n".join(lines)


#: (label, what is shown, a file that exists when it was written, what it holds)
ARTEFACTS = (
    ("Paper", "table{1..8}.{tex,csv}, figure{1,3}.pdf, curves/", "table1.tex",
     "the paper's tables and figures, radius-accuracy curves"),
    ("Compare", "comparison.{md,tex,csv}", "comparison.md", "paper vs this run, a verdict per cell"),
    ("Models", "certified_accuracy.{tex,csv,pdf}", "certified_accuracy.csv", "every certified model"),
    ("Ensembles", "ensembles.{tex,csv}, adaptive.csv", "ensembles.csv", "every ensemble and scheme, CertifyAdp"),
    ("Cost", "cost_estimate.md", "cost_estimate.md", "GPU-hours of the configured grid"),
    ("Report", "report.html", "report.html", "every table and figure with captions and provenance"),
    ("Logs", "logs/, benchmarks/", "logs", "one log per job; each job's time and memory"),
)


def artefact_lines(results: Path) -> str:
    """Where the artefacts of the paper and the run's own outputs are (those written)."""
    return "\n".join(f"  {label + ':':10s} {shown}  ({what})"
                     for label, shown, probe, what in ARTEFACTS if (results / probe).exists())


def verdict_lines(results: Path) -> str:
    path = results / "comparison_summary.csv"
    if not path.is_file():
        return ""
    return "\n".join(f"  {line}" for line in pd.read_csv(path)["summary"])


def render(results: str | Path, wall_seconds: float | None = None) -> str:
    results = Path(results)
    parts = ["Certified models and ensembles", compact_table(result_rows(results))]
    verdicts = verdict_lines(results)
    if verdicts:
        parts += ["", "Paper vs this run (comparison.md)", verdicts]
    parts += ["", "Time per stage (its jobs' wall times, summed)", stage_lines(stage_seconds(results), wall_seconds)]
    parts += ["", f"Artefacts, in {results}/", artefact_lines(results)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the run's results_dir, e.g. results/demo")
    parser.add_argument("--wall-seconds", type=float, default=None, help="wall time of the run, to print beside the stages")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.error(f"no results folder {args.results}: run the workflow first")
    print(render(args.results, args.wall_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
