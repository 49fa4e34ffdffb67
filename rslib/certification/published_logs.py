"""Published certification logs (Cohen et al.'s format, as the reference repositories release
them) restricted to the evaluation subset and written as this workflow's certificate: every row
checked (:func:`rslib.certification.tsv.check_row`), the classes of the dataset, the σ named in
the log's path, and the evaluation images present."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from rslib.certification.tsv import (
    HEADER,
    CertificateRow,
    RowError,
    certificate_row,
    read_rows,
)
from rslib.runtime.io import atomic_path

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
    from rslib.runtime.errors import CertificateLogError

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
    (:func:`rslib.certification.tsv.certificate_row`: time in seconds, radii as published). Returns its
    provenance (source path and SHA-256, rows, the dataset and σ it was checked against).

    The log must be one of ``dataset`` at ``sigma``, whole and as Cohen et al.'s ``certify.py``
    prints it: its path's σ markers equal ``sigma`` (:func:`check_log_sigma`); its header is
    ``idx label predict radius correct time``; every row passes
    :func:`rslib.certification.tsv.check_row`, the checker of our own shards (six fields, ending with its
    newline; label and predict below the dataset's class count from
    :data:`rslib.data.registry.DATASETS`, predict −1 for abstain; radius finite ≥ 0 and 0 on
    an abstention; correct = [predict = label]; time as seconds or ``h:mm:ss[.ffffff]``); no
    image appears twice; and it covers every one of ``indices``: a published row must describe
    the same images as every other row of a table (``000`` Tables 5-7 use the first 500 test
    images). Anything else raises :class:`rslib.runtime.errors.CertificateLogError`, one line naming
    ``file:line``, the field and what was expected, and nothing is written.
    """
    from rslib.data.registry import dataset_info
    from rslib.runtime.errors import CertificateLogError
    from rslib.runtime.io import file_digest

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
