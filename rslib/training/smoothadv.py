"""SmoothAdv (Salman et al. 2019): adversarial training of the smoothed classifier.

Per mini-batch (reference: github.com/Hadisalman/smoothing-adversarial, ``code/train_pgd.py``,
``train()`` with ``--adv-training --attack PGD --train-multi-noise``, the setting of every
published "multitrain" CIFAR-10 model):

1. draw m standard normal noise vectors per image, once (``noise = torch.randn_like(inputs)``
   on the m-fold repeated batch);
2. with the model in eval mode, run :func:`rslib.training.attacks.smooth_adv_pgd` (T steps, radius ε
   warmed up linearly over the first 10 epochs) on the smoothed soft classifier, using those
   draws;
3. back in train mode, the loss is the **cross-entropy of every noisy copy, averaged over all
   B·m copies** — ``criterion(model(inputs + noise), targets.repeat(m))`` with
   ``CrossEntropyLoss()`` (mean) in the reference — evaluated on the adversarial points with the
   *same* noise draws. (The reference's other branch, without ``--train-multi-noise``, trains on
   one copy per image; −log of the averaged softmax is used only inside the attack.)

Batch-size note: the reference splits each loaded batch of ``--batch`` rows into m mini-batches
of ``batch/m`` images × m copies and takes one optimiser step per mini-batch. Here one call of
:meth:`SmoothAdv.loss` is one optimiser step on ``batch_size`` *images* × m copies, so the
reference's ``--batch 256`` with m copies corresponds to ``batch_size = 256 / m`` here.

Hyper-parameters (``hparams``): ``num_noise_vec`` (m), ``attack_steps`` (T), ``epsilon`` (ε,
plain L2 in [0, 1]-pixel units: the reference's ``--epsilon 256`` is ε = 1.0 here),
``warmup_epochs`` (default 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.attacks import smooth_adv_pgd, warmup_epsilon
from rslib.training.base import TrainingMethod, hparam_value
from rslib.training.copies import (
    copy_labels,
    draw_noise,
    mean_over_copies,
    noisy_copies,
)
from rslib.training.hparams import METHOD_KEYS


@dataclass(frozen=True)
class AttackSettings:
    """SmoothAdv's attack settings, shared with AdvMacer (``000`` Sec. 4: "the choices of T, m, ε
    are the same as SmoothAdv", Table 2)."""

    num_noise_vec: int
    attack_steps: int
    epsilon: float
    warmup_epochs: int = 10

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], method: str) -> AttackSettings:
        settings = cls(
            num_noise_vec=int(hparam_value(hparams, "num_noise_vec", method)),
            attack_steps=int(hparam_value(hparams, "attack_steps", method)),
            epsilon=float(hparam_value(hparams, "epsilon", method)),
            warmup_epochs=int(hparam_value(hparams, "warmup_epochs", method, 10)),
        )
        if settings.num_noise_vec < 1:
            raise ConfigError(f"{method}: num_noise_vec must be >= 1, got {settings.num_noise_vec}")
        if settings.attack_steps < 0 or settings.epsilon < 0:
            raise ConfigError(f"{method}: attack_steps and epsilon must be >= 0")
        return settings

    def epsilon_at(self, epoch: int) -> float:
        """ε for the 0-based ``epoch`` after the linear warm-up (see :func:`warmup_epsilon`)."""
        return warmup_epsilon(self.epsilon, epoch, self.warmup_epochs)

    def attack(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the noise once and attack: returns ``(x_adv, noise)`` — the caller must reuse
        ``noise`` for its training loss, as the reference does."""
        noise = draw_noise(x, self.num_noise_vec)
        x_adv = smooth_adv_pgd(model, x, y, noise, sigma, self.epsilon_at(epoch), self.attack_steps)
        return x_adv, noise


def soft_smoothed_log_probs(logits: torch.Tensor, m: int) -> torch.Tensor:
    """log of the copy-averaged softmax, ``(B*m, K)`` → ``(B, K)``: the soft smoothed classifier's
    log-probabilities, returned to the loop for its running train accuracy."""
    return torch.log(mean_over_copies(F.softmax(logits, dim=1), m).clamp_min(1e-20))


class SmoothAdv(TrainingMethod):
    """SmoothAdv_PGD training with m noise samples ("multitrain"); see the module docstring."""

    name = "smoothadv"
    hparam_keys: ClassVar[tuple[str, ...]] = METHOD_KEYS["smoothadv"]

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        self.attack_settings = AttackSettings.from_hparams(self.hparams, self.name)

    def epsilon_at(self, epoch: int) -> float:
        return self.attack_settings.epsilon_at(epoch)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        m = self.attack_settings.num_noise_vec
        x_adv, noise = self.attack_settings.attack(model, x, y, self.sigma, epoch)  # eval mode inside
        logits = model(noisy_copies(x_adv, m, self.sigma, noise))  # train mode, same draws
        return self.objective(logits, y, m, epoch), soft_smoothed_log_probs(logits, m)

    def objective(self, logits: torch.Tensor, y: torch.Tensor, m: int, epoch: int) -> torch.Tensor:
        """The training loss on the (B·m, classes) logits of the adversarial copies: mean CE over
        all B·m copies (Salman et al.'s ``--train-multi-noise``). AdvMacer overrides only this."""
        return F.cross_entropy(logits, copy_labels(y, m))
