"""The interface every training method implements (Gaussian, SmoothAdv, MACER, AdvMacer, …)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class TrainingMethod:
    """One training objective. The shared loop (:mod:`rslib.training.loop`) owns the optimiser,
    schedule, data order, seeding, checkpoints and SIGTERM handling; a method only computes the
    mini-batch loss.

    ``loss`` is called with the model in train mode and the global torch RNG seeded from
    ``(seed, epoch, step)``, so any noise it draws with ``torch.randn`` is reproducible and a
    resumed run repeats it exactly. Methods that attack in eval mode switch modes themselves.
    """

    name: ClassVar[str]
    #: hyper-parameters a method reads beyond the optimiser's (documented per method)
    hparam_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sigma: float, hparams: dict[str, Any]):
        self.sigma = float(sigma)
        self.hparams = dict(hparams)

    def loss(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch loss, or ``(loss, logits)`` where ``logits`` (any one copy per image)
        feed the running train accuracy in the progress output."""
        raise NotImplementedError
