"""Your own training method: stability training (Zheng et al. 2016), the Gaussian-noise baseline
of Li et al. 2019 that Jeong & Shin 2020 compare Consistency with, as their reimplementation
computes it (``code/train_stab.py`` of jh-jeong/smoothing-consistency):

    L = CE(f(x), y) + λ · mean over the batch of H(softmax f(x), softmax f(x + δ)),   δ ~ N(0, σ²I)

the cross-entropy on the clean image plus λ times the cross-entropy of the noisy copy's
prediction against the clean prediction (Σ_k −p_k(x) log p_k(x + δ); gradients flow through
both). H(p, q) = KL(p ‖ q) + H(p): Zheng et al. write the KL divergence; the reimplementation's
cross-entropy also lowers the entropy of the clean prediction. λ = 2 in their CIFAR-10 runs.

Configured in the workflow as ``methods.stability: {module: stability_training, digits: {…}}``
(examples/your_model_your_method/config.yaml); docs/example.md walks through the example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.base import TrainingMethod, hparam_value


class StabilityTraining(TrainingMethod):
    """Clean cross-entropy + λ · cross-entropy of the noisy prediction against the clean one."""

    name = "stability"
    label = "Stability"
    hparam_keys: ClassVar[tuple[str, ...]] = ("stability_weight",)

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.weight = float(hparam_value(self.hparams, "stability_weight", self.name, 2.0))
        if not self.weight >= 0:
            raise ConfigError(f"{self.name}: stability_weight must be >= 0 (got {self.weight})")

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        clean = model(x)  # two passes, as the reimplementation: batch norm normalises each batch by its own statistics
        noisy = model(x + self.sigma * torch.randn_like(x))  # noise on [0, 1] pixels, unclipped
        stability = -(F.softmax(clean, dim=1) * F.log_softmax(noisy, dim=1)).sum(1).mean()
        return F.cross_entropy(clean, y) + self.weight * stability, noisy  # accuracy under noise
