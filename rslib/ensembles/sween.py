"""SWEEN weights (``002`` Sec. 5.1, App. C.1): w = softmax(θ) fitted by cross-entropy of the
weighted member softmax under Gaussian noise on held-out training images, as the authors' code
(github SWEEN-author/SWEEN ``ens_train.py``) fits them: SGD with momentum and weight decay on θ,
a step schedule, one fresh noise draw per image per epoch, crop and flip augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


# --------------------------------------------------------------------------------------------
# SWEEN (002)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweenFit:
    """How SWEEN's authors fit the weights (github SWEEN-author/SWEEN, ``ens_train.py`` and
    ``training/ens.py``; ``002`` itself gives no optimiser): SGD with lr 0.01 (hard-coded there;
    its ``--lr`` flag is ignored), momentum 0.9, weight decay 5e-4 on θ, batch 64, 150 epochs,
    lr × 0.1 at epochs 60 and 90 of their ``MultiStepLR``, which they step *before* each epoch,
    so on PyTorch ≥ 1.1 the drops come after 59 and 89 completed epochs (``lr_milestones``
    counts completed epochs, as the training loop's do); crop (padding 4) and horizontal flip of
    the held-out images, as their member training (SVHN flipped too)."""

    epochs: int = 150
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (59, 89)
    lr_gamma: float = 0.1
    crop_padding: int = 4
    flip: bool = True

    @classmethod
    def from_settings(cls, settings: dict) -> SweenFit:
        """From the config's ``ensembles.sween`` block (its adaptive-prediction keys are ignored)."""
        augment = settings.get("augment", {})
        return cls(
            epochs=int(settings.get("epochs", cls.epochs)), batch_size=int(settings.get("batch_size", cls.batch_size)),
            lr=float(settings.get("lr", cls.lr)), momentum=float(settings.get("momentum", cls.momentum)),
            weight_decay=float(settings.get("weight_decay", cls.weight_decay)),
            lr_milestones=tuple(int(m) for m in settings.get("lr_milestones", cls.lr_milestones)),
            lr_gamma=float(settings.get("lr_gamma", cls.lr_gamma)),
            crop_padding=int(augment.get("crop_padding", cls.crop_padding)), flip=bool(augment.get("flip", cls.flip)),
        )

    def lr_at(self, epoch: int) -> float:
        """lr during 0-based ``epoch`` (``epoch`` epochs completed)."""
        from rslib.training.loop import multistep_lr

        return multistep_lr(self.lr, self.lr_gamma, self.lr_milestones, epoch)


def sween_loss(theta: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SWEEN's objective on one batch (``002`` Sec. 5.1; authors' ``training/ens.py``):
    −(1/B) Σ_b log( Σ_l softmax(θ)_l · softmax(f_l(x_b + δ_b))_{y_b} + 1e-10 ).

    ``probs``: the members' softmax outputs (k, B, c) on the noisy batch; 1e-10 inside the log
    as theirs (no clamping)."""
    k = probs.shape[0]
    p_y = probs.gather(2, labels.view(1, -1, 1).expand(k, -1, 1)).squeeze(2)  # (k, B)
    return -torch.log(torch.softmax(theta, dim=0) @ p_y + 1e-10).mean()


def sween_weights(
    members: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    sigma: float,
    fit: SweenFit,
    generator: torch.Generator,
) -> torch.Tensor:
    """SWEEN ensembling weights w = softmax(θ) (``002`` Sec. 5.1 "Solving the ensembling
    weight", App. B.2 Alg. 2 line 7), fitted as the authors' code does (:class:`SweenFit`):
    members frozen in eval mode, θ = 0 (uniform w) at start, float32; each epoch a fresh
    permutation of the held-out ``images`` (the last ``heldout_images`` training images,
    :func:`rslib.data.load.heldout_split`, as theirs), mini-batches of ``fit.batch_size``, each image
    cropped/flipped and given one fresh Gaussian draw δ ~ N(0, σ²I) (no clipping), one SGD step
    on :func:`sween_loss` per batch. Every random draw (permutation, crop, flip, noise, in that
    order per batch) comes from ``generator``, on its device.
    """
    from rslib.training.loop import augment_batch

    device = images.device
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    theta = torch.zeros(len(members), dtype=torch.float32, device=device, requires_grad=True)
    optimiser = torch.optim.SGD([theta], lr=fit.lr, momentum=fit.momentum, weight_decay=fit.weight_decay)
    for member in members:
        member.eval()
    for epoch in range(fit.epochs):
        for group in optimiser.param_groups:
            group["lr"] = fit.lr_at(epoch)
        order = torch.randperm(images.shape[0], generator=generator, device=generator.device).to(device)
        for start in range(0, images.shape[0], fit.batch_size):
            batch = order[start:start + fit.batch_size]
            x = augment_batch(images[batch], fit.crop_padding, fit.flip, generator=generator)
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            x = x + sigma * noise.to(device)
            with torch.no_grad():
                probs = torch.stack([member(x).float().softmax(dim=1) for member in members])
            loss = sween_loss(theta, probs, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return torch.softmax(theta.detach(), dim=0)
