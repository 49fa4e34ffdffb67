"""Gaussian data augmentation (Cohen et al. 2019, Sec. 3.3): cross-entropy of the base
classifier on one noisy copy x + N(0, σ²I) per image (noise on [0, 1] pixels, not clipped)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rslib.training.base import TrainingMethod


class Gaussian(TrainingMethod):
    name = "gaussian"

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        logits = model(x + self.sigma * torch.randn_like(x))
        return F.cross_entropy(logits, y), logits
