"""Metrics over certification TSVs (``000`` Sec. 4 "Evaluation", following Cohen et al. and MACER
``001`` Sec. 4): ACR = mean over all evaluated images of radius·1[correct] (abstentions and errors
count as 0); certified accuracy at r = fraction of evaluated images classified correctly with
radius ≥ r; and their seeded bootstrap intervals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def average_certified_radius(df: pd.DataFrame) -> float:
    return float(np.mean(df["radius"].to_numpy() * (df["correct"].to_numpy() == 1)))


def certified_accuracy(df: pd.DataFrame, radius: float) -> float:
    return float(np.mean((df["correct"].to_numpy() == 1) & (df["radius"].to_numpy() >= radius)))


def summarize(df: pd.DataFrame, radii: Iterable[float]) -> dict[str, float]:
    """ACR, clean accuracy of the smoothed classifier and certified accuracy at each radius."""
    out = {"images": float(len(df)), "acr": average_certified_radius(df), "accuracy": certified_accuracy(df, 0.0)}
    for r in radii:
        out[f"r={r:g}"] = certified_accuracy(df, r)
    return out


def per_image_statistics(df: pd.DataFrame, radii: Iterable[float]) -> dict[str, np.ndarray]:
    """Each statistic of :func:`summarize` as the per-image quantity it averages: radius·1[correct]
    (ACR), 1[correct] (clean accuracy), 1[correct, radius ≥ r] (certified accuracy at r)."""
    correct = df["correct"].to_numpy() == 1
    radius = df["radius"].to_numpy(dtype=float)
    out = {"acr": radius * correct, "accuracy": correct.astype(float)}
    for r in radii:
        out[f"r={r:g}"] = (correct & (radius >= r)).astype(float)
    return out


def bootstrap_intervals(
    certificates: Sequence[pd.DataFrame],
    radii: Iterable[float],
    *,
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every :func:`summarize` statistic.

    ``certificates`` are the certificates of one table row on the same images: one file, or
    one per trained seed of a method (then the interval covers the seed as well). Each of the
    ``replicates`` draws a seed uniformly (``rng.integers(S, size=B)``), then N images with
    replacement (``rng.integers(N, size=(B, N))``), in that order from
    ``np.random.default_rng(seed)``, and evaluates the statistic of that seed on those images;
    the interval is the (1 − level)/2 and (1 + level)/2 quantiles (numpy's default linear
    interpolation). Seeded: the same certificates give the same interval on every rerun, and
    rows of the same size share their image draws (paired across a table).
    """
    radii = list(radii)
    if not certificates:
        raise ValueError("bootstrap_intervals: no certificates")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_intervals: level {level} is not in (0, 1)")
    first = certificates[0]["idx"].to_numpy()
    for df in certificates[1:]:
        if not np.array_equal(df["idx"].to_numpy(), first):
            raise ValueError("bootstrap_intervals: the seeds' certificates cover different images")
    per_seed = [per_image_statistics(df, radii) for df in certificates]
    rng = np.random.default_rng(seed)
    n_images = len(first)
    which = rng.integers(len(certificates), size=replicates)
    images = rng.integers(n_images, size=(replicates, n_images))
    tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out = {}
    for key in per_seed[0]:
        values = np.stack([stats[key] for stats in per_seed])  # seeds × images
        means = values[which[:, None], images].mean(axis=1)
        low, high = np.quantile(means, tails)
        out[key] = (float(low), float(high))
    return out
