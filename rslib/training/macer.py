"""MACER (Zhai et al. 2020, ``001`` Sec. 4.5 Eq. 17, Alg. 1): maximise the certified radius.

For k noisy copies per image (layout of :mod:`rslib.training.copies`) the mini-batch loss is

    (1/n) Σ_i −log ẑ(x_i)_{y_i}  +  (λσ/2n) Σ_{i ∈ G} max(γ − ξ̂(x_i, y_i), 0)       (Alg. 1, line 9)

with ẑ the copy-averaged softmax, G the images whose (β-)smoothed prediction is the label and
ξ̂ = Φ⁻¹(p_top1) − Φ⁻¹(p_top2). Facts checked in the reference implementation
(github.com/RuntianZ/macer, ``macer.py``, ``macer_train``; our code is written independently):

* classification term: ``log(mean softmax + 1e-10)``, summed and divided by the batch size;
* the robustness term uses ``softmax(β · logits)`` averaged over copies ("only apply beta to the
  robustness loss"); G and the top-2 classes come from ``topk(·, 2)`` of that average;
* entries with ξ̂ non-finite (nan/inf: probabilities that are 0 or 1 in float32) are **dropped**,
  as are those with ξ̂ > γ (where the hinge is zero); ξ̂ is then recomputed on the kept entries
  only — which also keeps the inf/nan derivatives of Φ⁻¹ at 0 and 1 out of the backward pass;
* the kept hinges are summed, scaled by σ/2 and λ, and the total is divided by the **full**
  batch size (``loss /= input_size``), not by |G|;
* the model stays in train mode; no attack.

The σ = 1.0 schedule ("we first train with λ = 0.0, and then change to λ = 12.0 after learning
rate decay", ``001`` App. C.1, footnote 5) is ``lbd_zero_until_first_decay``: λ = 0 for the
epochs before ``lr_milestones[0]`` (the epoch from which the training loop decays the lr), λ
from then on. The reference code itself has no such switch (it was a manual restart).

Hyper-parameters: ``num_noise_vec`` (k, default 16), ``gamma`` (γ, 8), ``beta`` (β, 16), ``lbd``
(λ, required: 12 / 4 / 12 after decay for σ = 0.25 / 0.5 / 1.0 on CIFAR-10),
``lbd_zero_until_first_decay`` (default false).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.base import TrainingMethod, hparam_value
from rslib.training.copies import mean_over_copies, noisy_copies
from rslib.training.hparams import METHOD_KEYS
from rslib.training.smoothadv import soft_smoothed_log_probs


def normal_icdf(p: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(p) = √2 · erfinv(2p − 1) (the formula of ``torch.distributions.Normal.icdf``);
    ±inf at p ∈ {0, 1}, nan outside [0, 1]."""
    return math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)


def macer_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    m: int,
    sigma: float,
    gamma: float,
    beta: float,
    lbd: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MACER's mini-batch objective (``001`` Alg. 1 line 9; ``000`` App. A Alg. 1 step 8).

    Args:
        logits: ``(B*m, K)`` base-model logits of m noisy copies per image, copies adjacent.
        y: ``(B,)`` labels.
        m: copies per image (k in ``001``, m in ``000``).
        sigma, gamma, beta, lbd: σ, hinge γ, inverse temperature β, trade-off λ.

    Returns:
        ``(total, classification, robustness)`` with ``total = classification + robustness``;
        ``robustness`` already includes the factor λσ/2 and the division by the full batch B.
    """
    batch = y.shape[0]
    # Classification: −log of the copy-averaged softmax at the label (+1e-10 as the reference).
    probs = mean_over_copies(F.softmax(logits, dim=1), m)
    classification = -torch.log(probs.gather(1, y[:, None]).squeeze(1) + 1e-10).mean()

    # Robustness: β-sharpened soft smoothed classifier.
    beta_probs = mean_over_copies(F.softmax(beta * logits, dim=1), m)
    top = torch.topk(beta_probs, 2, dim=1)
    correct = top.indices[:, 0] == y  # G: the smoothed prediction is the label
    p1, p2 = top.values[correct, 0], top.values[correct, 1]
    with torch.no_grad():
        xi = normal_icdf(p1) - normal_icdf(p2)
        keep = torch.isfinite(xi) & (xi <= gamma)  # drop ±inf/nan, and inactive hinges
    # Recompute ξ on the kept entries only: indexing a tensor that holds inf would still send
    # 0·inf = nan through Φ⁻¹'s backward.
    xi_kept = normal_icdf(p1[keep]) - normal_icdf(p2[keep])
    robustness = lbd * sigma / 2.0 * (gamma - xi_kept).sum() / batch
    return classification + robustness, classification, robustness


@dataclass(frozen=True)
class MacerSettings:
    """γ, β, λ and the λ schedule; shared by MACER and AdvMacer."""

    gamma: float
    beta: float
    lbd: float
    lbd_zero_until_first_decay: bool = False
    first_decay: int | None = None

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], method: str) -> MacerSettings:
        zero_first = bool(hparams.get("lbd_zero_until_first_decay", False))
        milestones = list(hparams.get("lr_milestones") or [])
        if zero_first and not milestones:
            raise ConfigError(
                f"{method}: lbd_zero_until_first_decay needs lr_milestones (lambda switches on at the first lr decay)"
            )
        return cls(
            gamma=float(hparam_value(hparams, "gamma", method, 8.0)),
            beta=float(hparam_value(hparams, "beta", method, 16.0)),
            lbd=float(hparam_value(hparams, "lbd", method)),
            lbd_zero_until_first_decay=zero_first,
            first_decay=int(milestones[0]) if milestones else None,
        )

    def lbd_at(self, epoch: int) -> float:
        """λ in the 0-based ``epoch``: 0 before the first lr decay when the σ = 1.0 schedule is on
        (``001`` App. C.1 fn. 5); the loop decays lr from epoch ``lr_milestones[0]`` on."""
        if self.lbd_zero_until_first_decay and self.first_decay is not None and epoch < self.first_decay:
            return 0.0
        return self.lbd

    def loss(self, logits: torch.Tensor, y: torch.Tensor, m: int, sigma: float, epoch: int):
        return macer_loss(logits, y, m, sigma, self.gamma, self.beta, self.lbd_at(epoch))


class Macer(TrainingMethod):
    """MACER training; see the module docstring."""

    name = "macer"
    hparam_keys: ClassVar[tuple[str, ...]] = METHOD_KEYS["macer"]

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.num_noise_vec = int(hparam_value(self.hparams, "num_noise_vec", self.name, 16))
        if self.num_noise_vec < 1:
            raise ConfigError(f"{self.name}: num_noise_vec must be >= 1, got {self.num_noise_vec}")
        self.macer_settings = MacerSettings.from_hparams(self.hparams, self.name)

    def lbd_at(self, epoch: int) -> float:
        return self.macer_settings.lbd_at(epoch)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        m = self.num_noise_vec
        logits = model(noisy_copies(x, m, self.sigma))  # one forward pass on B·k inputs
        total, _, _ = self.macer_settings.loss(logits, y, m, self.sigma, epoch)
        return total, soft_smoothed_log_probs(logits, m)
