"""Consistency regularization (Jeong & Shin, NeurIPS 2020, "Consistency Regularization for
Certified Robustness of Smoothed Classifiers"), the Gaussian-augmentation ("cohen") variant that
the paper reports for CIFAR-10 and that Liu et al. use as a Table 1 baseline.

Objective per mini-batch (paper Eq. 8/9; reference code ``jh-jeong/smoothing-consistency``,
``code/consistency.py::consistency_loss`` with ``loss='default'`` and
``code/train_consistency.py::train``), with m noise copies x + δ_i, δ_i ~ N(0, σ²I),
p_i = softmax(f(x + δ_i)) and p̂ = (1/m) Σ_i p_i:

    L = mean over the B·m copies of CE(f(x + δ_i), y)
        + mean over the B images of [ λ · (1/m) Σ_i KL(p̂ ‖ p_i) + η · H(p̂) ]

Details fixed by the reference code (not by the one-line summary):

* the KL is ``F.kl_div(log_softmax(logits_i), p̂, reduction='none').sum(1)``, i.e.
  KL(p̂ ‖ p_i) = Σ_k p̂_k (log p̂_k − log p_i,k) per example, averaged over the m copies; the
  reduction over the batch is a plain mean (the same value as 'batchmean' of a per-example sum);
* the entropy is of the average p̂, with log(p̂.clamp(min=1e-20));
* p̂ is *not* detached: gradients flow through the target of the KL and through the entropy;
* the cross-entropy is ``CrossEntropyLoss()`` (mean) over all B·m noisy copies.

CIFAR-10 settings (paper Sec. 4 / stored results of the reference repository under
``data/certify/cifar10/consistency/cohen/num_2/lbd_{20.0,10.0}/eta_0.5/cifar_resnet110/``):
m = 2, η = 0.5, λ = 20 (σ = 0.25), 10 (σ = 0.5), 10 (σ = 1.0); SGD lr 0.1, momentum 0.9,
wd 1e-4, 150 epochs, lr ×0.1 every 50. Note that the reference ``train`` splits each loader
batch of 256 into m chunks of 256/m images and takes one optimiser step per chunk
(``_chunk_minibatch``); the equivalent here is ``batch_size = 256 / m`` = 128 in the config.

Copy layout: the m copies of an image are ADJACENT (rows b·m … b·m + m − 1 belong to image b),
the layout of :mod:`rslib.training.copies`; the reference code concatenates copy-major, which
only permutes rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.base import TrainingMethod
from rslib.training.copies import copy_labels, noisy_copies, split_copies
from rslib.training.hparams import METHOD_KEYS

#: λ of the CIFAR-10 "cohen" runs by σ (see the module docstring).
CIFAR10_LBD: dict[float, float] = {0.25: 20.0, 0.5: 10.0, 1.0: 10.0}


def consistency_loss(logits: torch.Tensor, y: torch.Tensor, m: int, lbd: float, eta: float) -> torch.Tensor:
    """The full Consistency objective on (B·m, K) logits of adjacent noise copies and (B,) labels.

    Returns CE(all copies, mean) + mean_b[λ · mean_i KL(p̂_b ‖ p_b,i) + η · H(p̂_b)]
    (``code/train_consistency.py::train`` + ``code/consistency.py::consistency_loss``).
    """
    xent = F.cross_entropy(logits, copy_labels(y, m))
    log_p = split_copies(F.log_softmax(logits, dim=1), m)  # (B, m, K), raises on a ragged batch
    avg = log_p.exp().mean(1)  # p̂, kept in the graph as in the reference
    # KL(p̂ ‖ p_i) via kl_div(input=log p_i, target=p̂), summed over classes, averaged over copies
    kl = F.kl_div(log_p, avg.unsqueeze(1).expand_as(log_p), reduction="none").sum(2).mean(1)
    entropy = -(avg * torch.log(avg.clamp(min=1e-20))).sum(1)
    return xent + (lbd * kl + eta * entropy).mean()


def _sigma_default(table: dict[float, float], sigma: float, key: str, method: str) -> float:
    for s, value in table.items():
        if abs(s - sigma) < 1e-9:
            return value
    raise ConfigError(
        f"{method}: no published CIFAR-10 value of {key!r} for sigma={sigma:g} "
        f"(known: {', '.join(f'{s:g}' for s in table)}); set hparams.{key} explicitly"
    )


class Consistency(TrainingMethod):
    """Gaussian augmentation + consistency regularization (Jeong & Shin 2020).

    Hyper-parameters: ``num_noise_vec`` (m, default 2), ``lbd`` (λ; default by σ from the
    CIFAR-10 runs: 20 / 10 / 10 for σ = 0.25 / 0.5 / 1.0, required for other σ), ``eta``
    (η, default 0.5).
    """

    name = "consistency"
    hparam_keys: ClassVar[tuple[str, ...]] = METHOD_KEYS["consistency"]

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.m = int(self.hparams.get("num_noise_vec", 2))
        if self.m < 2:
            raise ConfigError(f"consistency: num_noise_vec must be >= 2 (got {self.m})")
        lbd = self.hparams.get("lbd")
        self.lbd = float(lbd) if lbd is not None else _sigma_default(CIFAR10_LBD, self.sigma, "lbd", self.name)
        self.eta = float(self.hparams.get("eta", 0.5))

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        logits = model(noisy_copies(x, self.m, self.sigma))
        # the first copy of each image feeds the loop's running train accuracy
        return consistency_loss(logits, y, self.m, self.lbd, self.eta), logits[:: self.m]
