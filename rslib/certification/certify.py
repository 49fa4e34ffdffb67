"""Certify a model on the evaluation subset, shard by shard, and merge shards exactly.

Output is Cohen et al.'s TSV layout ``idx label predict radius correct time`` (tab-separated,
header line, ``predict = -1`` for abstain), with two deliberate differences: the radius is
written unrounded (shortest round-trip float) so metrics are computed on exact values, and
``time`` is seconds as a float rather than a ``timedelta`` string. :func:`check_row` checks a
row of that layout, for our shards and for published logs alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rslib.certification.smooth import Smooth
from rslib.certification.tsv import HEADER, RowError, certificate_row, read_rows
from rslib.runtime.errors import CertificateError, force_rebuild
from rslib.runtime.io import atomic_path
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
    model_format: str | None = "rslib",
    model_options: Mapping[str, Any] | None = None,
) -> None:
    """Load a model (refusing one trained for another dataset or σ) and certify ``indices``.

    ``model_format`` and ``model_options`` (``arch``, ``input_layer``, ``allow_pickle``,
    ``allow_code``) go to :func:`rslib.models.released.load_any_model`: by default the file is an
    rslib model file."""
    from rslib.data.load import load_split
    from rslib.models.released import load_any_model
    from rslib.runtime.devices import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    model, spec, _ = load_any_model(model_path, model_format, dataset=dataset, sigma=sigma, device=dev,
                                    **(model_options or {}))
    test_set = load_split(data_meta, "test")
    smooth = Smooth(model, spec.num_classes, sigma, noise_seed=noise_seed, device=dev, autocast_bf16=autocast_bf16)
    print(
        f"certifying {len(indices)} images of {dataset} with {model_path} at sigma={sigma:g} "
        f"(n0={n0}, n={n}, alpha={alpha}) on {dev}",
        file=sys.stderr, flush=True,
    )
    certify_images(smooth, test_set, indices, out_tsv, n0=n0, n=n, alpha=alpha, batch_size=batch_size)


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
