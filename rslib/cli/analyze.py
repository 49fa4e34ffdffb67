"""``python -m rslib analyze OUT.tsv [MORE.tsv …]``: ACR and certified accuracy at each radius,
with 95 % bootstrap intervals, of certificate TSVs — ours and the reference repositories' logs
(``h:mm:ss`` times, radii rounded to 3 significant digits) alike.

Thin over :func:`rslib.certification.tsv.read_rows` (every row checked, ``file:line`` errors),
:func:`rslib.certification.tsv.read_certificates`, :func:`rslib.report.metrics.summarize` and
:func:`rslib.report.metrics.bootstrap_intervals`: the numbers of the workflow's tables.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence

NAME = "analyze"
SUMMARY = "ACR and certified accuracy (with 95%% intervals) of certificate TSVs"
DESCRIPTION = """\
Summarise certificate TSVs (Cohen et al.'s columns idx label predict radius correct time): ours
(rslib certify, the workflow) and the logs of the reference repositories (times as h:mm:ss,
radii rounded) alike. For each file: the number of images, the average certified radius (ACR:
the mean over all images of radius * [correct], abstentions and errors count 0), the clean
accuracy of the smoothed classifier, and the certified accuracy at each radius (the fraction of
images classified correctly with a radius >= r), each with a 95% percentile-bootstrap interval
over the images (2000 seeded resamples: the same interval on every run). Radii are L2 distances
in [0, 1]-pixel units."""
EPILOG = """\
examples:
  python -m rslib analyze out.tsv
  python -m rslib analyze a.tsv b.tsv --radii 0 0.5 1 --latex > table.tex
  python -m rslib analyze data/certify/cifar10/resnet110/noise_0.25/test/sigma_0.25 --csv"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``analyze``, each with its help."""
    from rslib.experiment.artefacts import TABLE_RADII

    parser.add_argument("files", metavar="TSV", nargs="+", help="certificate TSVs (ours or published logs)")
    parser.add_argument("--radii", type=float, nargs="+", metavar="R", default=list(TABLE_RADII),
                        help="radii of the certified accuracies (default: the paper's table columns, "
                             f"{' '.join(f'{r:g}' for r in TABLE_RADII)})")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--latex", action="store_true",
                        help="print one LaTeX (booktabs) table, a row per file, instead of the text tables")
    output.add_argument("--csv", action="store_true",
                        help="print CSV (file, statistic, value, low, high) instead of the text tables")


def analyze(path: str, radii: Sequence[float]) -> tuple[int, dict[str, float], dict[str, tuple[float, float]]]:
    """(images, :func:`rslib.report.metrics.summarize`, its 95 % :func:`rslib.report.metrics.bootstrap_intervals`)
    of one TSV at ``radii``, every row of it checked first (one ``file:line`` error line for a
    damaged row)."""
    from rslib.certification.tsv import RowError, read_certificates, read_rows
    from rslib.report.metrics import bootstrap_intervals, summarize
    from rslib.runtime.errors import CertificateError

    with open(path, encoding="utf-8") as f:
        try:
            rows = sum(1 for _ in read_rows(f, path, clock=True))
        except RowError as exc:
            raise CertificateError(str(exc)) from None
    if not rows:
        raise CertificateError(f"{path}: no certificates (only the header)")
    certificates = read_certificates(path)
    return rows, summarize(certificates, radii), bootstrap_intervals([certificates], radii)


def run(args: argparse.Namespace) -> int:
    """Print the summary of every file in ``args.files``."""
    from rslib.runtime.errors import ConfigError

    if any(r < 0 for r in args.radii):
        raise ConfigError(f"--radii must be >= 0, got {args.radii}")
    radii = sorted(set(args.radii))
    results = [(path, *analyze(path, radii)) for path in args.files]
    if args.csv:
        _print_csv(results, radii)
    elif args.latex:
        _print_latex(results, radii)
    else:
        for k, result in enumerate(results):
            print(("\n" if k else "") + _text_table(*result, radii))
    return 0


def _rows(radii: Sequence[float]) -> list[tuple[str, str]]:
    """(key of summarize, label) of every statistic, in print order."""
    return [("acr", "ACR"), ("accuracy", "clean accuracy"), *[(f"r={r:g}", f"certified at r={r:g}") for r in radii]]


def _cell(key: str, value: float) -> str:
    return f"{value:.3f}" if key == "acr" else f"{100 * value:.1f}%"


def _text_table(path: str, images: int, values: dict[str, float], intervals: dict[str, tuple[float, float]],
                radii: Sequence[float]) -> str:
    rows = _rows(radii)
    width = max(len(label) for _, label in rows)
    lines = [f"{path}: {images} images", f"  {'':<{width}}  {'value':>7}  95% interval"]
    for key, label in rows:
        low, high = intervals[key]
        lines.append(f"  {label:<{width}}  {_cell(key, values[key]):>7}  [{_cell(key, low)}, {_cell(key, high)}]")
    return "\n".join(lines)


def _print_csv(results: Sequence[tuple], radii: Sequence[float]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "statistic", "value", "low", "high"])
    for path, images, values, intervals in results:
        writer.writerow([path, "images", images, "", ""])
        for key, _ in _rows(radii):
            writer.writerow([path, key, repr(values[key]), repr(intervals[key][0]), repr(intervals[key][1])])


def _print_latex(results: Sequence[tuple], radii: Sequence[float]) -> None:
    from rslib.report.latex import latex_table

    header = ["File", "Images", "ACR", *[f"{r:g}" for r in radii]]
    rows = []
    for path, images, values, intervals in results:
        cells = [f"{values['acr']:.3f} [{intervals['acr'][0]:.3f}, {intervals['acr'][1]:.3f}]"]
        for r in radii:
            key = f"r={r:g}"
            low, high = intervals[key]
            cells.append(f"{100 * values[key]:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
        rows.append([path, str(images), *cells])
    caption = ("ACR and certified accuracy (%) of the smoothed classifier at each L2 radius, with 95% "
               "percentile-bootstrap intervals over the images.")
    print(latex_table(header, rows, caption=caption, align="lr" + "r" * (1 + len(radii))), end="")
