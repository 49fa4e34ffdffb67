"""Training curves for Figure 1 of ``000`` ("best ACR seen so far vs training hours, ACR
recorded every 25 epochs"): during training, every ``every`` epochs (and after the last one),
a cheap CERTIFY on a fixed small test subset gives an ACR estimate, stored with the training
time spent so far in the epoch's history record (so it survives checkpoints and resumes).

The evaluation time is not counted as training time: the loop adds the epoch's wall time to
``state.seconds`` before the hook runs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rslib.certification.smooth import Smooth
from rslib.runtime.io import atomic_path

CURVE_COLUMNS = ("epoch", "train_seconds", "acr", "accuracy", "images")


@dataclass(frozen=True)
class CurveConfig:
    every: int  # epochs between evaluations (25 in the paper)
    images: int  # first `images` indices of the evaluation subset
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch_size: int = 1000
    noise_seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CurveConfig | None:
        return None if not values else cls(**values)


def curve_images(config: CurveConfig, indices: Sequence[int]) -> list[int]:
    """The test images the curve evaluates: the first ``config.images`` of ``indices``."""
    return [int(i) for i in list(indices)[: config.images]]


def curve_hook(
    config: CurveConfig,
    test_set: Any,
    indices: Sequence[int],
    *,
    sigma: float,
    num_classes: int,
    device: torch.device,
    total_epochs: int,
    log: Callable[[str], None],
) -> Callable[[int, torch.nn.Module, Any], None]:
    """An ``on_epoch_end`` hook for :func:`rslib.training.loop.train_loop`."""
    subset = curve_images(config, indices)

    def hook(epoch: int, model: torch.nn.Module, state: Any) -> None:
        if epoch % config.every and epoch != total_epochs:
            return
        smooth = Smooth(model, num_classes, sigma, noise_seed=config.noise_seed, device=device)
        radii = []
        for i in subset:
            x, label = test_set[i]
            prediction, radius = smooth.certify(x, config.n0, config.n, config.alpha, config.batch_size, index=int(i))
            radii.append(radius if prediction == int(label) else None)
        model.train()
        correct = [r for r in radii if r is not None]
        record = state.history[-1]
        record["acr"] = sum(correct) / len(subset)
        record["curve_accuracy"] = len(correct) / len(subset)
        record["curve_images"] = len(subset)
        log(f"epoch {epoch}: ACR estimate {record['acr']:.3f} (accuracy {record['curve_accuracy']:.3f}) "
            f"on {len(subset)} images after {record['seconds']:.1f}s of training")

    return hook


def write_curve(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """CSV of the evaluated epochs: epoch, training seconds so far, ACR, accuracy, images."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_COLUMNS)
        for record in history:
            if "acr" in record:
                writer.writerow([record["epoch"], record["seconds"], record["acr"], record["curve_accuracy"],
                                 record["curve_images"]])
