"""A training method of the user's own, as docs/methods.md ("Your own method") shows it: Gaussian
data augmentation (Cohen et al. 2019, Sec. 3.3) on m noisy copies per image with a label-smoothed
cross-entropy. Configured as ``methods.gaussian_ls: {module: user_method, …}``; the workflow test
(tests/workflow/test_user_method_workflow.py) copies this file into the run's working directory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.base import TrainingMethod, hparam_value
from rslib.training.copies import copy_labels, noisy_copies


class GaussianLabelSmoothing(TrainingMethod):
    """Cross-entropy with label smoothing ε over m noisy copies x + N(0, σ²I) of each image."""

    name = "gaussian_ls"
    label = "Gaussian-LS"
    hparam_keys: ClassVar[tuple[str, ...]] = ("num_noise_vec", "label_smoothing")

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.m = int(hparam_value(self.hparams, "num_noise_vec", self.name, 1))
        self.smoothing = float(hparam_value(self.hparams, "label_smoothing", self.name, 0.1))
        if self.m < 1 or not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"{self.name}: need num_noise_vec >= 1 and 0 <= label_smoothing < 1 "
                              f"(got {self.m}, {self.smoothing})")

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        logits = model(noisy_copies(x, self.m, self.sigma))  # copies of an image adjacent
        loss = F.cross_entropy(logits, copy_labels(y, self.m), label_smoothing=self.smoothing)
        return loss, logits[:: self.m]  # the first copy of each image: the running train accuracy
