"""The certificate TSV of Cohen et al. (``idx label predict radius correct time``; ``predict`` −1
abstains): writing one row, checking one row (ours and published logs share the checker) and
reading a whole file. Ours writes radii unrounded and times in seconds; published logs round
radii and write times as ``h:mm:ss.ffffff``."""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rslib.certification.smooth import Smooth


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


COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


HEADER = "\t".join(COLUMNS) + "\n"


def certificate_row(index: int, label: int, prediction: int, radius: float, seconds: float) -> str:
    """One TSV line in :data:`COLUMNS` order: radius unrounded (``repr``), time in seconds."""
    return f"{int(index)}\t{int(label)}\t{prediction}\t{radius!r}\t{int(prediction == int(label))}\t{seconds:.6f}\n"


_INT = re.compile(r"-?[0-9]+")


#: a non-negative decimal as Python's ``repr``/``str.format`` print one ("0.412", "1e-05", "1.23e+02", "0.");
#: no sign, spaces, underscores, "nan" or "inf" (``float`` would take all of them)
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


#: ``str(datetime.timedelta)``: "0:00:14.105382", "0:00:02", "1 day, 2:03:04.500000"
_CLOCK = re.compile(r"(?:([0-9]+) days?, )?([0-9]+):([0-5][0-9]):([0-5][0-9](?:\.[0-9]+)?)")


def parse_seconds(value: object) -> float:
    """A certification time in seconds, from seconds (ours) or from the ``h:mm:ss.ffffff`` text
    that Cohen et al.'s and the other reference repositories write (``str(datetime.timedelta)``,
    possibly ``"1 day, 2:03:04.5"``). Raises ValueError on anything else: a sign, ``nan``,
    ``inf``, ``1_000``, or a clock that is not ``h:mm:ss[.f…]``."""
    if isinstance(value, numbers.Real):  # also numpy's scalars
        return float(value)
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    clock = _CLOCK.fullmatch(text)
    if not clock:
        raise ValueError(f"time {value!r} is neither seconds nor h:mm:ss")
    days, hours, minutes, seconds = clock.groups()
    return int(days or 0) * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)


class RowError(ValueError):
    """A line of a certification TSV that is not a row as it was printed; the message is one
    line, ``file:line: what is wrong, expected what``. Callers re-raise it as their own error
    (:class:`CertificateError` with a recovery command for a shard, ``CertificateLogError`` for a
    published log)."""


@dataclass(frozen=True)
class CertificateRow:
    """One checked row: the six fields of :data:`COLUMNS`, ``time`` in seconds."""

    idx: int
    label: int
    predict: int
    radius: float
    correct: int
    seconds: float


def check_row(
    line: str,
    where: str,
    *,
    classes: int | None = None,
    dataset: str = "the dataset",
    clock: bool = False,
) -> CertificateRow:
    """Check one line of a certification TSV as Cohen et al.'s ``certify.py`` prints it
    (``print("{}\\t{}\\t{}\\t{:.3}\\t{}\\t{}".format(i, label, prediction, radius, correct,
    time_elapsed), file=f, flush=True)``) and as :func:`certificate_row` writes it; the one row
    checker of this workflow's shards (:func:`merge_shards`) and of published logs
    (:func:`rslib.certification.published_logs.import_certification_log`).

    Six tab-separated fields, and a newline at the end (every row is printed with one: a last
    row without it was cut, whatever its fields still read); ``idx`` and ``label`` integers ≥ 0
    and ``predict`` ≥ −1 (−1 = abstain), both below ``classes`` where the dataset is known;
    ``radius`` a finite decimal ≥ 0, and 0 for an abstention; ``correct`` exactly
    ``int(predict == label)``; ``time`` seconds (a finite decimal ≥ 0), or with ``clock`` also
    ``str(timedelta)`` text ``h:mm:ss[.ffffff]`` (:func:`parse_seconds`), as the reference
    repositories publish it. Raises :class:`RowError` naming ``where``, the field and what was
    expected.
    """
    fields = line[:-1].split("\t") if line.endswith("\n") else line.split("\t")
    if len(fields) != len(COLUMNS):
        raise RowError(
            f"{where}: expected {len(COLUMNS)} tab-separated fields ({' '.join(COLUMNS)}), got {len(fields)}"
        )
    if not line.endswith("\n"):
        raise RowError(
            f"{where}: incomplete row: no newline after field 'time' ({fields[-1]!r}), expected every row to end "
            "with one (the file was cut inside this row)"
        )

    def bad(field: str, value: str, want: str) -> RowError:
        return RowError(f"{where}: field {field!r} is {value!r}, expected {want}")

    def integer(k: int, minimum: int, bounded: bool) -> int:
        value, limit = fields[k], classes if bounded else None
        if _INT.fullmatch(value) and int(value) >= minimum and (limit is None or int(value) < limit):
            return int(value)
        if limit is None:
            raise bad(COLUMNS[k], value, f"an integer >= {minimum}")
        abstain = "-1 (abstain) or " if minimum < 0 else ""
        raise bad(COLUMNS[k], value, f"{abstain}an integer in [0, {limit}) ({dataset} has {limit} classes)")

    def number(k: int) -> float:
        value = fields[k]
        x = float(value) if _NUMBER.fullmatch(value) else math.nan
        if not math.isfinite(x):
            raise bad(COLUMNS[k], value, "a finite number >= 0")
        return x

    index, label, prediction = integer(0, 0, False), integer(1, 0, True), integer(2, Smooth.ABSTAIN, True)
    radius = number(3)
    if prediction == Smooth.ABSTAIN and radius != 0.0:
        raise bad("radius", fields[3], "0.0 for an abstention (predict -1)")
    expected = str(int(prediction == label))
    if fields[4] != expected:
        raise bad("correct", fields[4], f"{expected} (predict {prediction}, label {label})")
    if not clock:
        seconds = number(5)
    else:
        try:
            seconds = parse_seconds(fields[5]) if fields[5].strip() == fields[5] else math.nan
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):
            raise bad("time", fields[5], "seconds >= 0 or h:mm:ss[.ffffff]")
    return CertificateRow(index, label, prediction, radius, int(expected), seconds)


def read_rows(
    lines: Iterable[str],
    name: str,
    *,
    classes: int | None = None,
    dataset: str = "the dataset",
    clock: bool = False,
) -> Iterator[tuple[int, str, CertificateRow]]:
    """The rows of a certification TSV (an open text file), each checked by :func:`check_row`,
    as ``(line number, line, row)``: first the header :data:`HEADER` (Cohen et al.'s, which
    this workflow writes too), then every non-blank line. Raises :class:`RowError`."""
    it = iter(lines)
    try:
        header = next(it, "")
        if header != HEADER:
            raise RowError(f"{name}:1: bad header {header.rstrip()!r}, expected {HEADER.rstrip()!r} "
                           "(not a certification TSV)")
        for number, line in enumerate(it, start=2):
            if line.strip():
                yield number, line, check_row(line, f"{name}:{number}", classes=classes, dataset=dataset,
                                              clock=clock)
    except UnicodeDecodeError as exc:
        raise RowError(f"{name}: not a text file ({exc.reason})") from None
