"""Certify a model on the evaluation subset, shard by shard, and merge shards exactly.

Output is Cohen et al.'s TSV layout ``idx label predict radius correct time`` (tab-separated,
header line, ``predict = -1`` for abstain), with two deliberate differences: the radius is
written unrounded (shortest round-trip float) so metrics are computed on exact values, and
``time`` is seconds as a float rather than a ``timedelta`` string. :func:`check_row` checks a
row of that layout, for our shards and for published logs alike.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CertificateError, force_rebuild
from .io import atomic_path
from .progress import progress
from .smoothing import Smooth

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
HEADER = "\t".join(COLUMNS) + "\n"


def certificate_row(index: int, label: int, prediction: int, radius: float, seconds: float) -> str:
    """One TSV line in :data:`COLUMNS` order: radius unrounded (``repr``), time in seconds."""
    return f"{int(index)}\t{int(label)}\t{prediction}\t{radius!r}\t{int(prediction == int(label))}\t{seconds:.6f}\n"


def shard_ranges(num_images: int, num_shards: int) -> list[tuple[int, int]]:
    """Split positions ``0 .. num_images-1`` of the evaluation subset into contiguous shards of
    near-equal size. Empty shards are dropped, so there are ``min(num_shards, num_images)``."""
    if num_images <= 0:
        return []
    num_shards = max(1, min(num_shards, num_images))
    bounds = [round(k * num_images / num_shards) for k in range(num_shards + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(num_shards)]


def certify_images(
    smooth: Smooth,
    dataset: Any,
    indices: Sequence[int],
    out_tsv: str | os.PathLike,
    *,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    log=lambda m: print(m, file=sys.stderr, flush=True),
) -> None:
    """CERTIFY each dataset image in ``indices`` and write the TSV atomically."""
    with atomic_path(out_tsv) as tmp, open(tmp, "w") as out:
        out.write(HEADER)
        started = time.perf_counter()
        for k, i in enumerate(indices):
            x, label = dataset[i]
            t0 = time.perf_counter()
            prediction, radius = smooth.certify(x, n0, n, alpha, batch_size, index=int(i))
            elapsed = time.perf_counter() - t0
            out.write(certificate_row(i, label, prediction, radius, elapsed))
            if (k + 1) % max(1, len(indices) // 10) == 0 or k + 1 == len(indices):
                log(f"certified {progress(k + 1, len(indices), started, 'images')}")


def run_certification(
    *,
    model_path: str | os.PathLike,
    data_meta: str | os.PathLike,
    dataset: str,
    sigma: float,
    indices: Sequence[int],
    out_tsv: str | os.PathLike,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    noise_seed: int,
    device: str = "auto",
    autocast_bf16: bool = False,
    threads: int | None = None,
) -> None:
    """Load a model (refusing one trained for another dataset or σ) and certify ``indices``."""
    from .checkpoint import load_model
    from .data import load_split
    from .training import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    model, spec, _ = load_model(model_path, dataset=dataset, sigma=sigma, device=dev)
    test_set = load_split(data_meta, "test")
    smooth = Smooth(model, spec.num_classes, sigma, noise_seed=noise_seed, device=dev, autocast_bf16=autocast_bf16)
    print(
        f"certifying {len(indices)} images of {dataset} with {model_path} at sigma={sigma:g} "
        f"(n0={n0}, n={n}, alpha={alpha}) on {dev}",
        file=sys.stderr, flush=True,
    )
    certify_images(smooth, test_set, indices, out_tsv, n0=n0, n=n, alpha=alpha, batch_size=batch_size)


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
    (:func:`rslib.analysis.import_certification_log`).

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


def merge_shards(
    shards: Sequence[str | os.PathLike],
    out_tsv: str | os.PathLike,
    expected: Sequence[int],
    *,
    classes: int | None = None,
    dataset: str = "the dataset",
) -> None:
    """Concatenate shard TSVs in order; the rows must be exactly the images ``expected``.

    Every field of every row is checked as :func:`certificate_row` writes it, by the same
    :func:`check_row` that checks published logs (idx, label ≥ 0, predict ≥ −1 integers, label
    and predict below ``classes`` where given; radius finite ≥ 0, and 0 for an abstention;
    correct = [predict = label]; time finite ≥ 0 seconds; the row ends with its newline);
    blank lines are skipped. A damaged shard raises :class:`CertificateError` naming
    ``file:line``, the field, and how to recompute that shard (:func:`rslib.errors.force_rebuild`).
    Nothing is written unless every row is good.
    """
    rows: list[str] = []
    where: list[tuple[str, int]] = []  # (shard, line) of each row
    got: list[int] = []
    for shard in shards:
        shard = str(shard)
        fix = force_rebuild(shard)
        try:
            f = open(shard, encoding="utf-8")
        except OSError as exc:
            raise CertificateError(f"cannot read shard {shard}: {exc.strerror}; recover: {fix}") from None
        with f:
            try:
                for number, line, row in read_rows(f, shard, classes=classes, dataset=dataset):
                    got.append(row.idx)
                    where.append((shard, number))
                    rows.append(line)
            except RowError as exc:
                raise CertificateError(f"{exc}; recover: {fix}") from None
    expected = [int(i) for i in expected]
    if got != expected:
        k = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        if k < len(got):
            shard, number = where[k]
            detail = f"{shard}:{number} has image {got[k]} where the subset has " + (
                f"image {expected[k]}" if k < len(expected) else "no more images"
            )
            fix = force_rebuild(shard)
        else:
            detail = f"image {expected[k]} and {len(expected) - k - 1} more are missing after the last shard"
            fix = force_rebuild(" ".join(str(s) for s in shards))
        raise CertificateError(
            f"shards cover images {got[:3]}…({len(got)}) but the evaluation subset is {expected[:3]}…"
            f"({len(expected)}): {detail}; rerun the certify shards: {fix}"
        )
    with atomic_path(out_tsv) as tmp:
        Path(tmp).write_text(HEADER + "".join(rows))
