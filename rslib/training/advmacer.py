"""AdvMacer (Liu et al., ``000`` Sec. 3.1 and App. A, Alg. 1): MACER's loss at SmoothAdv's
adversarial points.

Per mini-batch:

1. SmoothAdv's attack (:func:`rslib.training.attacks.smooth_adv_pgd`: T-step L2 PGD on the smoothed soft
   classifier, model in eval mode, ε warmed up over the first epochs, m noise draws per image)
   gives x̂ (Alg. 1 step 2; Sec. 3.1 "we generate the adversarial examples x̂ via Equation (1)
   with T-step PGD using SmoothAdv");
2. back in train mode, one forward pass on the m noisy copies of x̂ — *the same noise draws* as
   the attack, as SmoothAdv reuses them for its training loss — and the MACER objective on it
   (Alg. 1 steps 3–8; :func:`rslib.training.macer.macer_loss`): CE of the copy-averaged soft
   classifier at x̂ + (λσ/2n) Σ_{i∈S} max(γ − ξ̂(x̂_i, y_i), 0).

Two readings of Alg. 1, and ours:

* **Noise of the training loss.** Step 3 draws m new Gaussian samples around each x̂ (it writes
  N(x_i, σ²I), x_i for x̂_i), and step 8 samples yet another δ; Sec. 3.1's formula and the
  statement that AdvMacer costs exactly what SmoothAdv costs fit one set of draws. We reuse the
  attack's m draws for the loss, as SmoothAdv's reference code does for its own loss (fresh
  draws would add noise sampling, not network passes: the cost argument holds either way).
* **Where β applies.** Alg. 1 lists the inverse temperature β as an input but uses it in no
  step. We follow MACER (``001`` and its code, which Sec. 3.1 builds on): β scales the logits
  of the robustness (hinge) term only, softmax(β·f); the cross-entropy term uses softmax(f).
  Applying β to both terms is the other reading; it is not implemented.

Cost: T attack forward/backward passes on B·m inputs + one training forward/backward on B·m
inputs — exactly SmoothAdv's (``000`` Sec. 3.1 (II), Sec. 4 "SmoothAdv and AdvMacer have the
same training time"); the radius term is closed-form and needs no extra pass.

Hyper-parameters: SmoothAdv's ``num_noise_vec`` (m), ``attack_steps`` (T), ``epsilon`` (ε),
``warmup_epochs`` (10), and MACER's ``gamma`` (8), ``beta`` (16), ``lbd`` (λ: 12 on CIFAR-10,
2 on ImageNet, 12/4 on SVHN σ = 0.25/0.5), ``lbd_zero_until_first_decay`` (false).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from rslib.training.hparams import METHOD_KEYS
from rslib.training.macer import MacerSettings
from rslib.training.smoothadv import SmoothAdv


class AdvMacer(SmoothAdv):
    """AdvMacer training; see the module docstring. SmoothAdv's step with MACER's objective."""

    name = "advmacer"
    hparam_keys: ClassVar[tuple[str, ...]] = METHOD_KEYS["advmacer"]

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.macer_settings = MacerSettings.from_hparams(self.hparams, self.name)

    def lbd_at(self, epoch: int) -> float:
        return self.macer_settings.lbd_at(epoch)

    def objective(self, logits: torch.Tensor, y: torch.Tensor, m: int, epoch: int) -> torch.Tensor:
        total, _, _ = self.macer_settings.loss(logits, y, m, self.sigma, epoch)
        return total
