"""SmoothMix (Jeong, Park, Kim, Lee, Kim & Shin, NeurIPS 2021, "SmoothMix: Training
Confidence-calibrated Smoothed Classifiers for Certified Robustness"), a Table 1 baseline.

Reference code: ``jh-jeong/smoothmix``, ``code/train.py`` (``SmoothMix_PGD.attack``,
``_mixup_data``, ``_avg_softmax``, ``train``, ``main``). One training step on a batch (x, y)
with m standard-normal noise draws δ_1..δ_m shared by every forward pass of the step:

1. **Adversarial search** (``SmoothMix_PGD.attack``), model in eval mode, parameters frozen:
   x⁰ = x; for t = 0..T−1: ascend ℓ(x) = Σ_b −log( mean_i softmax(f(x_b + σδ_i)) )_{y_b}
   (mean clamped at 1e-20 before the log; ``nll_loss(..., reduction='sum')``) by
   x ← clip_[0,1]( P_maxnorm( x + α · g/(‖g‖₂ + 1e-8) ) ) with the per-example L2-normalised
   gradient g. No norm ball by default (``maxnorm=None``: only the [0, 1] clip). The iterate
   before step ``mix_step`` (x⁰ = clean for mix_step = 0, the one-step adversary for 1) becomes
   the "clean side" x₀, projected onto the L2 ball of radius ``maxnorm_s`` (default
   α·mix_step, warmed up with the epoch) around x; the last iterate is x_T.
2. **Clean loss**: CE of the base classifier on the m noisy copies of x₀ (mean over B·m).
3. **Mixup**: λ_b ~ U[0, ½) per example; x_mix = (1−λ)x₀ + λx_T; soft target
   ŷ_mix = (1−λ)·F̂(x₀) + λ·u, where F̂(x₀) = mean_i softmax(f(x₀ + σδ_i)) is the smoothed soft
   prediction at the clean side from step 2 (NOT one-hot(y); not detached) and u the uniform
   distribution over the K classes.
4. **Mixup loss**: KL(ŷ_mix ‖ softmax(f(x_mix + σδ_i))) per copy, same noise as step 2
   (``F.kl_div(log_softmax, target, reduction='none').sum(1)``), multiplied by the confidence
   mask 1[argmax F̂(x₀) = y] and averaged over all B·m copies (masked rows count as zeros).
5. L = CE + η · w(e) · mixup, with the warm-up factor w(e) = min(1, (e+1)/warmup) (epoch e
   counted from 0, ``warmup = 10``), which also scales ``maxnorm_s``.

CIFAR-10 settings (``EXPERIMENTS.MD``, "Ours: SmoothMix (CIFAR-10)"): m = 2, T = 4, η = 5,
α = 0.5 / 1.0 / 2.0 for σ = 0.25 / 0.5 / 1.0, mix_step = 0 ("+ One-step adversary" is
mix_step = 1), warmup 10 (argparse default); cifar_resnet110, lr 0.1, step 50, 150 epochs.
As in the Consistency code, the reference splits each loader batch of 256 into m optimiser
steps of 256/m images (``_chunk_minibatch``): use ``batch_size = 128`` for m = 2.

Copy layout: copies of an image ADJACENT (row b·m + i is copy i of image b), the layout of
:mod:`rslib.training.copies`; the reference concatenates copy-major, which only permutes
rows. In eval mode (the attack) the m copies go through the model as one batch; in train mode the clean and the mixed copies are two separate
forward passes, as in the reference, so BatchNorm sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rslib.runtime.errors import ConfigError
from rslib.training.base import TrainingMethod
from rslib.training.consistency import _sigma_default
from rslib.training.copies import (
    copy_labels,
    draw_noise,
    mean_over_copies,
    noisy_copies,
)
from rslib.training.hparams import METHOD_KEYS

#: PGD step size α of the CIFAR-10 runs by σ (``EXPERIMENTS.MD``).
CIFAR10_ALPHA: dict[float, float] = {0.25: 0.5, 0.5: 1.0, 1.0: 2.0}


@contextmanager
def frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter for the attack (as the
    reference's ``requires_grad_(model, False); model.eval()``); every module's mode and every
    parameter's flag are restored afterwards, also on error."""
    modes = [(mod, mod.training) for mod in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for mod, mode in modes:
            mod.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def _project(x: torch.Tensor, x0: torch.Tensor, maxnorm: float | None) -> torch.Tensor:
    """``SmoothMix_PGD.attack._project``: optionally shrink x − x0 onto the L2 ball of radius
    ``maxnorm`` per example (``Tensor.renorm`` semantics), then clip to [0, 1]; detached."""
    if maxnorm is not None:
        x = x0 + (x - x0).renorm(p=2, dim=0, maxnorm=maxnorm)
    return x.clamp(0, 1).detach()


def smoothmix_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: torch.Tensor,
    *,
    sigma: float,
    alpha: float,
    num_steps: int,
    mix_step: int = 0,
    maxnorm_s: float | None = None,
    maxnorm: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothMix adversarial search (``SmoothMix_PGD.attack``). Returns ``(x_clean_side, x_adv)``.

    ``noise``: standard-normal (B·m, C, H, W) in the adjacent-copy layout; the same draws are
    used at every step (and by the caller for the training loss). ``maxnorm_s`` defaults to
    ``alpha * mix_step``. Runs with the model in eval mode and frozen parameters, restored
    afterwards; leaves no parameter gradients.
    """
    m = noise.shape[0] // x.shape[0]
    if m * x.shape[0] != noise.shape[0]:
        raise ValueError(f"noise has {noise.shape[0]} rows, not a multiple of the batch {x.shape[0]}")
    if maxnorm_s is None:
        maxnorm_s = alpha * mix_step
    x = x.detach()
    adv = x
    init = x
    with frozen_eval(model):
        for step in range(num_steps):
            if step == mix_step:
                init = adv  # the iterate *before* step `mix_step` is the clean side
            adv = adv.clone().requires_grad_(True)
            probs = F.softmax(model(noisy_copies(adv, m, sigma, noise)), dim=1)
            avg = mean_over_copies(probs, m)
            loss = F.nll_loss(torch.log(avg.clamp(min=1e-20)), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [adv])
            norm = grad.reshape(grad.shape[0], -1).norm(dim=1).view(-1, *([1] * (grad.dim() - 1)))
            # ascent on the smoothed soft classifier's CE, normalised per example; the
            # reference has no ε-ball by default (maxnorm None): only the [0, 1] clip
            adv = _project(adv.detach() + alpha * grad / (norm + 1e-8), x, maxnorm)
    init = _project(init, x, maxnorm_s)
    return init, adv.detach()


def mix_inputs(x1: torch.Tensor, x2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``_mixup_data``: (1 − λ_b) x1_b + λ_b x2_b per example."""
    lam = lam.view(-1, *([1] * (x1.dim() - 1)))
    return (1 - lam) * x1 + lam * x2


def mixed_targets(avg_probs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``_mixup_data``: (1 − λ_b) F̂(x₀)_b + λ_b · uniform, on (B, K) smoothed probabilities."""
    lam = lam.view(-1, 1)
    return (1 - lam) * avg_probs + lam / avg_probs.shape[1]


def smoothmix_loss(
    logits_clean: torch.Tensor,
    logits_mix: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    m: int,
    eta: float,
) -> torch.Tensor:
    """The SmoothMix objective (``train`` in ``code/train.py``) on (B·m, K) logits of the clean-
    side copies and of the mixed copies (adjacent layout, same noise), labels (B,), mixing
    coefficients λ (B,) and the effective weight η (already times the warm-up factor)."""
    xent = F.cross_entropy(logits_clean, copy_labels(y, m), reduction="none")
    avg = mean_over_copies(F.softmax(logits_clean, dim=1), m)  # F̂(x₀), kept in the graph
    target = copy_labels(mixed_targets(avg, lam), m)  # one soft target row per copy
    kl = F.kl_div(F.log_softmax(logits_mix, dim=1), target, reduction="none").sum(1)
    # confidence mask: mix only examples the smoothed classifier gets right at the clean side
    correct = copy_labels((avg.argmax(1) == y).to(kl.dtype), m)
    return xent.mean() + eta * (correct * kl).mean()


class SmoothMix(TrainingMethod):
    """SmoothMix training (Jeong et al. 2021).

    Hyper-parameters: ``num_noise_vec`` (m, 2), ``num_steps`` (T, 4), ``eta`` (η, 5.0),
    ``alpha`` (step size; default by σ from the CIFAR-10 runs: 0.5 / 1.0 / 2.0 for
    σ = 0.25 / 0.5 / 1.0, required for other σ), ``mix_step`` (0; 1 = "one-step adversary"),
    ``warmup`` (10 epochs; 0 disables), ``maxnorm`` (None: no ball for the adversary),
    ``maxnorm_s`` (None → α·mix_step: ball for the clean side).
    """

    name = "smoothmix"
    hparam_keys: ClassVar[tuple[str, ...]] = METHOD_KEYS["smoothmix"]

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        super().__init__(sigma, hparams)
        h = self.hparams
        self.m = int(h.get("num_noise_vec", 2))
        self.num_steps = int(h.get("num_steps", 4))
        self.eta = float(h.get("eta", 5.0))
        alpha = h.get("alpha")
        self.alpha = float(alpha) if alpha is not None else _sigma_default(CIFAR10_ALPHA, self.sigma, "alpha", self.name)
        self.mix_step = int(h.get("mix_step", 0))
        self.warmup = int(h.get("warmup", 10))
        self.maxnorm = None if h.get("maxnorm") is None else float(h["maxnorm"])
        self.maxnorm_s = float(h["maxnorm_s"]) if h.get("maxnorm_s") is not None else self.alpha * self.mix_step
        if self.m < 1 or self.num_steps < 1 or not 0 <= self.mix_step < self.num_steps:
            raise ConfigError(
                f"smoothmix: need num_noise_vec >= 1, num_steps >= 1 and 0 <= mix_step < num_steps "
                f"(got {self.m}, {self.num_steps}, {self.mix_step})"
            )

    def warmup_factor(self, epoch: int) -> float:
        """min(1, (epoch + 1) / warmup) with 0-based epochs (``main`` in ``code/train.py``)."""
        return 1.0 if self.warmup <= 0 else min(1.0, (epoch + 1) / self.warmup)

    def step_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epoch: int,
        noise: torch.Tensor,
        lam: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SmoothMix step with the random numbers given: standard-normal ``noise``
        (B·m, C, H, W) and ``lam`` (B,) in [0, ½). Returns ``(loss, clean logits of copy 0)``."""
        warm = self.warmup_factor(epoch)
        x_clean, x_adv = smoothmix_attack(
            model, x, y, noise, sigma=self.sigma, alpha=self.alpha, num_steps=self.num_steps,
            mix_step=self.mix_step, maxnorm_s=warm * self.maxnorm_s, maxnorm=self.maxnorm,
        )
        logits_clean = model(noisy_copies(x_clean, self.m, self.sigma, noise))
        logits_mix = model(noisy_copies(mix_inputs(x_clean, x_adv, lam), self.m, self.sigma, noise))
        loss = smoothmix_loss(logits_clean, logits_mix, y, lam, self.m, self.eta * warm)
        return loss, logits_clean[:: self.m]

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        noise = draw_noise(x, self.m)
        lam = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) / 2  # λ ~ U[0, ½)
        return self.step_loss(model, x, y, epoch, noise, lam)
