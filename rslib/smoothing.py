"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), with
Cohen, Rosenfeld & Kolter (2019)'s PREDICT and CERTIFY (their Sec. 3.2, Pseudocode).

This is the certifier used by ``000`` (Sec. 4, "Evaluation": CERTIFY with N0 = 100,
N = 100,000, α = 0.001) and by every baseline paper. The class keeps the familiar shape of
the reference ``Smooth`` (``predict``, ``certify``) and adds:

* noise from :class:`rslib.noise.NoiseStream`, so sample k of image i in each phase is the
  same in every shard, rerun and ensemble member (pass the image's dataset ``index``);
* vectorised counting with ``torch.bincount`` on the device, one host sync per call;
* ``torch.inference_mode``, and on CUDA channels-last and optional bf16 autocast (the
  certificate then holds for the model as run, in bf16).

Smoothing convention (SPEC): noise is added to [0, 1] pixels and never clipped; the
model's first layer normalises. Radii are L2 distances in [0, 1]-pixel units.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext

import torch
from scipy.stats import beta, binomtest, norm

from .noise import NoiseStream, round_batch_size


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - α) Clopper–Pearson lower bound on a binomial proportion.

    ``beta.ppf(α, n_a, n - n_a + 1)``; 0 when ``n_a = 0`` (the Beta quantile is undefined there).
    Equals ``proportion_confint(n_a, n, alpha=2α, method="beta")[0]`` used by Cohen et al.
    """
    if not 0 <= n_a <= n:
        raise ValueError(f"need 0 <= n_a <= n, got n_a={n_a}, n={n}")
    if n_a == 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """Radius σ·Φ⁻¹(p̲_A) of Cohen et al. Thm. 1 (with p̲_B = 1 − p̲_A); caller checks p̲_A ≥ 0.5."""
    return float(sigma * norm.ppf(p_a_lower))


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest radius CERTIFY can return with n samples (all n votes for the top class).

    At n = 100,000 and α = 0.001 this is ≈ 3.81σ.
    """
    return certified_radius(alpha ** (1.0 / n), sigma)


def certify_from_counts(selection: torch.Tensor, estimation: torch.Tensor, alpha: float, sigma: float) -> tuple[int, float]:
    """CERTIFY's decision from its class counts: the top selection class ĉ_A (ties → lowest
    class index, as in Cohen et al.'s code), the one-sided Clopper–Pearson bound p̲_A of its
    estimation count (n = the estimation total), and (ABSTAIN, 0.0) when p̲_A < ½, else
    (ĉ_A, σΦ⁻¹(p̲_A)). Shared by :meth:`Smooth.certify`, stored single-model counts and ensembles
    reduced from stored outputs, so all three certify identically."""
    c_a = int(selection.argmax())
    n = int(estimation.sum())
    p_a_lower = lower_confidence_bound(int(estimation[c_a]), n, alpha)
    if p_a_lower < 0.5:
        return Smooth.ABSTAIN, 0.0
    radius = certified_radius(p_a_lower, sigma)
    assert math.isfinite(radius)
    return c_a, radius


def noisy_batches(
    x: torch.Tensor,
    num: int,
    batch_size: int,
    noise: NoiseStream,
    sigma: float,
    index: int,
    phase: str,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """The noisy inputs x + σ·ε for samples ``start … start+num−1`` of ``phase`` of image
    ``index``, in batches of whole noise blocks, on ``noise.device`` (channels-last on CUDA).

    The one place where base-classifier inputs are built: CERTIFY, stored ensemble member
    outputs and the second certifiers all see exactly these samples.
    """
    x = x.to(noise.device, non_blocking=True)
    batch = round_batch_size(batch_size)
    for offset in range(0, num, batch):
        size = min(batch, num - offset)
        noisy = x.unsqueeze(0) + sigma * noise.sample(index, phase, start + offset, size, x.shape)
        if noise.device.type == "cuda":
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        yield noisy


class Smooth:
    """A smoothed classifier around ``base_classifier`` at noise level ``sigma``.

    ``base_classifier`` maps a batch of [0, 1]-pixel images to logits over ``num_classes``.
    Noise is drawn from ``NoiseStream(noise_seed)``; give each image its dataset index.
    """

    #: Returned by ``predict`` and ``certify`` when the smoothed classifier abstains.
    ABSTAIN = -1

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        sigma: float,
        noise_seed: int = 0,
        device: torch.device | str | None = None,
        autocast_bf16: bool = False,
    ):
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.device = torch.device(device) if device is not None else next(base_classifier.parameters()).device
        self.base_classifier = base_classifier.to(self.device).eval()
        if self.device.type == "cuda":
            self.base_classifier = self.base_classifier.to(memory_format=torch.channels_last)
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.noise = NoiseStream(noise_seed, self.device)
        self.autocast_bf16 = bool(autocast_bf16) and self.device.type == "cuda"

    # -- sampling ---------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, index: int, phase: str, start: int = 0
    ) -> torch.Tensor:
        """Class counts of f(x + ε) over noise samples ``start … start+num−1`` of ``phase`` for
        image ``index`` (``start`` a multiple of :data:`rslib.noise.BLOCK`; staged sampling such as
        CertifyAdp continues a stream where the previous stage ended).

        Returns an int64 CPU tensor of length ``num_classes``.
        """
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        for noisy in noisy_batches(x, num, batch_size, self.noise, self.sigma, index, phase, start):
            with self._autocast():
                logits = self.base_classifier(noisy)
            counts += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu()

    # -- Cohen et al. PREDICT and CERTIFY ------------------------------------------------------
    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, index: int = 0) -> int:
        """PREDICT: the top class, or ``ABSTAIN`` when a two-sided binomial test of the two
        largest counts has p-value > α (Cohen et al., Pseudocode; ``scipy.stats.binomtest``).
        The probability of returning a class other than g(x) is at most α."""
        counts = self.sample_counts(x, n, batch_size, index, "predict")
        top2 = torch.topk(counts, 2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return self.ABSTAIN
        return int(top2.indices[0])

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, index: int = 0
    ) -> tuple[int, float]:
        """CERTIFY: (class, L2 radius) or (``ABSTAIN``, 0.0).

        The top class is selected with ``n0`` samples; ``n`` *independent* samples then give
        the one-sided Clopper–Pearson lower bound p̲_A at level α. Abstain when p̲_A < 0.5,
        else return radius σ·Φ⁻¹(p̲_A). With probability ≥ 1 − α the returned class is g(x)
        and g is constant within the radius (Cohen et al. Prop. 2).
        """
        selection = self.sample_counts(x, n0, batch_size, index, "selection")
        estimation = self.sample_counts(x, n, batch_size, index, "estimation")
        return certify_from_counts(selection, estimation, alpha, self.sigma)
