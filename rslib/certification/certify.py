"""Certify a model on the evaluation subset, shard by shard, and merge shards exactly.

Output is Cohen et al.'s TSV layout ``idx label predict radius correct time`` (tab-separated,
header line, ``predict = -1`` for abstain), with two deliberate differences: the radius is
written unrounded (shortest round-trip float) so metrics are computed on exact values, and
``time`` is seconds as a float rather than a ``timedelta`` string. :func:`check_row` checks a
row of that layout, for our shards and for published logs alike.

Two ways of writing: a workflow shard is written atomically, whole, at the end
(:func:`certify_images`); ``rslib certify`` (:mod:`rslib.cli`) writes each row and flushes it as
soon as its image is certified (``resume=True``), so a rerun continues after the last complete
row (:func:`continue_rows`), with the arguments the file was started with
(:func:`check_arguments`). Every image's noise is its own (:class:`rslib.certification.noise.NoiseStream`),
so the continued file has the rows of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rslib.certification.smooth import Smooth
from rslib.certification.tsv import HEADER, RowError, certificate_row, read_rows
from rslib.data.registry import DatasetInfo
from rslib.runtime.errors import CertificateError, force_rebuild
from rslib.runtime.io import atomic_path, write_json
from rslib.runtime.progress import progress


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
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    resume: bool = False,
    log_every: int | None = None,
) -> None:
    """CERTIFY each dataset image in ``indices`` and write its row of the TSV.

    By default the TSV is written atomically, whole, when the last image is done (a workflow
    shard). ``resume=True``: each row is written and flushed as soon as its image is certified,
    and an existing ``out_tsv`` is continued after its last complete row (:func:`continue_rows`).
    A progress line (done/total, rate, ETA) goes to ``log`` every ``log_every`` images (default:
    every tenth of them) and after the last."""
    indices = [int(i) for i in indices]
    if not resume:
        with atomic_path(out_tsv) as tmp, open(tmp, "w") as out:
            out.write(HEADER)
            _certify_rows(smooth, dataset, indices, 0, out, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                          log=log, log_every=log_every)
        return
    done = continue_rows(out_tsv, indices, classes=smooth.num_classes)
    if done == len(indices):
        log(f"{out_tsv} already holds all {done} images")
        return
    if done:
        log(f"continuing {out_tsv} after its {done} complete rows")
    with open(out_tsv, "a", encoding="utf-8") as out:
        _certify_rows(smooth, dataset, indices, done, out, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                      log=log, log_every=log_every, flush=True)


def _certify_rows(smooth: Smooth, dataset: Any, indices: Sequence[int], done: int, out: Any, *, n0: int, n: int,
                  alpha: float, batch_size: int, log: Callable[[str], None], log_every: int | None,
                  flush: bool = False) -> None:
    """Certify ``indices[done:]`` and write their rows to ``out`` (flushing each when ``flush``)."""
    every = log_every or max(1, len(indices) // 10)
    started = time.perf_counter()
    for k in range(done, len(indices)):
        i = indices[k]
        x, label = dataset[i]
        t0 = time.perf_counter()
        prediction, radius = smooth.certify(x, n0, n, alpha, batch_size, index=i)
        elapsed = time.perf_counter() - t0
        out.write(certificate_row(i, label, prediction, radius, elapsed))
        if flush:
            out.flush()
        if (k + 1) % every == 0 or k + 1 == len(indices):
            log(f"certified {progress(k + 1, len(indices), started, 'images', resumed=done)}")


def continue_rows(out_tsv: str | os.PathLike, indices: Sequence[int], *, classes: int | None = None) -> int:
    """How many images of ``indices`` the TSV ``out_tsv`` already holds, ready to append the next row.

    A missing (or empty, or header-only-in-part) file is started with :data:`HEADER`. Otherwise
    each row is checked (:func:`rslib.certification.tsv.read_rows`) and must be the next image of
    ``indices``; a last row without its newline was cut by a killed run and is removed (it is
    certified again). A damaged row, another image, or more rows than ``indices`` raise
    :class:`CertificateError`."""
    path = Path(out_tsv)
    data = path.read_bytes() if path.is_file() else b""
    if HEADER.encode().startswith(data):  # nothing, or a header cut short
        with open(path, "w", encoding="utf-8") as out:
            out.write(HEADER)
        return 0
    lines = data.splitlines(keepends=True)
    keep = lines if lines[-1].endswith(b"\n") else lines[:-1]
    try:
        rows = list(read_rows((line.decode("utf-8") for line in keep), str(path), classes=classes))
    except RowError as exc:
        raise CertificateError(f"{exc}; the file is damaged: delete it (or that row and the rows after it) and "
                               f"run again") from None
    except UnicodeDecodeError:
        raise CertificateError(f"{path}: not a certification TSV (not UTF-8 text)") from None
    if len(rows) > len(indices):
        raise CertificateError(f"{path} holds {len(rows)} rows, more than the {len(indices)} images to certify")
    for k, (number, _, row) in enumerate(rows):
        if row.idx != indices[k]:
            raise CertificateError(f"{path}:{number} has image {row.idx} where the evaluation subset has image "
                                   f"{indices[k]}: the file was written for other images; write to another file")
    if len(keep) < len(lines):
        with open(path, "r+b") as out:
            out.truncate(sum(len(line) for line in keep))
    return len(rows)


def arguments_record(out_tsv: str | os.PathLike) -> Path:
    """The JSON file beside a resumable TSV that records the arguments it is written with: ``OUT.tsv.json``."""
    path = Path(out_tsv)
    return path.with_name(path.name + ".json")


def check_arguments(out_tsv: str | os.PathLike, arguments: Mapping[str, Any], *,
                    may_change: Sequence[str] = ()) -> None:
    """Record ``arguments`` (JSON values) beside ``out_tsv`` (:func:`arguments_record`), or refuse
    to continue a TSV that was written with others.

    A new TSV (none there yet) gets a new record. An existing TSV needs its record, and every
    argument but those of ``may_change`` must be the recorded one; the record is then updated.
    Raises :class:`CertificateError` naming each argument that differs."""
    record_path = arguments_record(out_tsv)
    if Path(out_tsv).is_file() and Path(out_tsv).stat().st_size > len(HEADER):
        try:
            recorded = json.loads(record_path.read_text(encoding="utf-8"))["arguments"]
        except FileNotFoundError:
            raise CertificateError(f"{out_tsv} exists, but {record_path} does not say which arguments it was written "
                                   f"with: move it away, or write to another file") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CertificateError(f"{record_path} is damaged ({exc}): move {out_tsv} away, or write to another "
                                   f"file") from None
        wanted = json.loads(json.dumps(dict(arguments)))
        differ = [f"{key} {recorded.get(key)!r} (now {wanted.get(key)!r})" for key in sorted(set(recorded) | set(wanted))
                  if key not in may_change and recorded.get(key) != wanted.get(key)]
        if differ:
            raise CertificateError(f"{out_tsv} was written with other arguments ({record_path}): "
                                   f"{'; '.join(differ)}; rerun with the recorded ones to continue it, or write to "
                                   f"another file")
    write_json(record_path, {"written_by": "rslib certify", "arguments": dict(arguments)})


def run_certification(
    *,
    model_path: str | os.PathLike,
    data_meta: str | os.PathLike,
    dataset: str | DatasetInfo,
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
    model_format: str | None = "rslib",
    model_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    log_every: int | None = None,
) -> None:
    """Load a model (refusing one trained for another dataset or σ) and certify ``indices``.

    ``model_format`` and ``model_options`` (``arch``, ``input_layer``, ``allow_pickle``,
    ``allow_code``) go to :func:`rslib.models.released.load_any_model`: by default the file is an
    rslib model file. ``dataset``: a registered name, or the :class:`DatasetInfo` of images of the
    user's own (see :func:`rslib.models.released.load_any_model`). ``resume`` and ``log_every``:
    :func:`certify_images`."""
    from rslib.data.load import load_split
    from rslib.models.released import load_any_model
    from rslib.runtime.devices import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    model, spec, _ = load_any_model(model_path, model_format, dataset=dataset, sigma=sigma, device=dev,
                                    **(model_options or {}))
    test_set = load_split(data_meta, "test")
    name = dataset.name if isinstance(dataset, DatasetInfo) else dataset
    smooth = Smooth(model, spec.num_classes, sigma, noise_seed=noise_seed, device=dev, autocast_bf16=autocast_bf16)
    print(
        f"certifying {len(indices)} images of {name} with {model_path} at sigma={sigma:g} "
        f"(n0={n0}, n={n}, alpha={alpha}) on {dev}",
        file=sys.stderr, flush=True,
    )
    certify_images(smooth, test_set, indices, out_tsv, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                   resume=resume, log_every=log_every)


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
    ``file:line``, the field, and how to recompute that shard (:func:`rslib.runtime.errors.force_rebuild`).
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
