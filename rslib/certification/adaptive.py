"""Second certifiers: adaptive sampling for a predetermined radius and Soft-RS.

* :func:`certify_adaptive` — CERTIFYADP of Horváth et al. (``004``, Sec. 6 "Adaptive
  Sampling", Alg. 2, Thm. 6.1, proof in App. E). For a radius r fixed in advance it selects
  the top class with n0 samples and then draws fresh samples in stages n_1 < … < n_s; each
  stage certifies with a Clopper–Pearson lower bound at level α/s (Bonferroni over the s
  stages) or aborts early with a Clopper–Pearson upper bound at level β/(s−1).
* :func:`stage_return_fractions`, :func:`sample_reduction` — the ASR_j and SampleRF columns
  of ``004`` Table 4.
* :func:`soft_certify` — Soft randomized smoothing certification of MACER (``001``, App. A.2,
  eqs. (20), (23), (26) and its Alg. 2 CERTIFYHOEFFDING / CERTIFYBERNSTEIN): the smoothed soft
  classifier E_η[z^c(x + η)] with a Hoeffding or empirical-Bernstein lower confidence bound.

Noise comes from :class:`rslib.certification.noise.NoiseStream` with the same phases and addressing as
:class:`rslib.certification.smooth.Smooth`, so the samples are those of ``Smooth.certify`` for the same
``noise_seed`` / ``index`` (selection: phase ``"selection"`` from sample 0; the stages of
CERTIFYADP: phase ``"estimation"`` in consecutive, disjoint sample ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import norm

from rslib.certification.noise import BLOCK, NoiseStream
from rslib.certification.bounds import lower_confidence_bound
from rslib.certification.smooth import Smooth, noisy_batches

__all__ = [
    "AdaptiveResult",
    "SoftResult",
    "upper_confidence_bound",
    "stage_offsets",
    "last_stage_size",
    "certify_adaptive",
    "stage_return_fractions",
    "certify_adaptive_images",
    "sample_reduction",
    "hoeffding_lower_bound",
    "bernstein_lower_bound",
    "soft_sample_moments",
    "soft_certify",
]


ABSTAIN = Smooth.ABSTAIN


# --- confidence bounds ------------------------------------------------------------------------


def upper_confidence_bound(n_a: int, n: int, level: float) -> float:
    """One-sided (1 − level) Clopper–Pearson upper bound on a binomial proportion.

    UPPERCONFBND(k, n, 1 − level) of ``004`` App. F: ``beta.ppf(1 − level, n_a + 1, n − n_a)``;
    1 when ``n_a = n``. Mirror image of :func:`rslib.certification.bounds.lower_confidence_bound`.
    """
    if not 0 <= n_a <= n:
        raise ValueError(f"need 0 <= n_a <= n, got n_a={n_a}, n={n}")
    if n_a == n:
        return 1.0
    return float(beta_dist.ppf(1.0 - level, n_a + 1, n - n_a))


# --- CERTIFYADP (004 Alg. 2) ------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveResult:
    """Outcome of :func:`certify_adaptive` for one image.

    ``prediction``: the selected class ĉ_A when radius r is certified, else ``ABSTAIN`` (−1).
    ``selected``: ĉ_A from the n0 selection samples (``004`` Alg. 2 line 3).
    ``certified``: Alg. 2 line 7 fired at some stage.
    ``aborted``: Alg. 2 line 9 fired at a stage before the last (early abstention).
    ``stage``: 1-based stage at which the procedure returned (1 … s).
    ``samples``: noise samples drawn, n0 + n_1 + … + n_stage.
    ``p_lower`` / ``p_upper``: the bounds of the returning stage (``p_upper`` is NaN when no
    upper bound was computed, i.e. on certification or at the last stage).
    """

    prediction: int
    selected: int
    certified: bool
    aborted: bool
    stage: int
    samples: int
    p_lower: float
    p_upper: float


def stage_offsets(stage_sizes: Sequence[int]) -> list[int]:
    """First ``"estimation"``-phase sample of each stage.

    Stages use consecutive, disjoint sample ranges ("fresh samples", ``004`` Sec. 6). Noise
    ranges must start at a multiple of ``BLOCK`` (=100), so a stage starts at the first multiple
    of 100 at or after the end of the previous stage; the unused tail of a partial block is
    skipped (those samples are simply never drawn). Stage sizes themselves are not rounded.
    """
    offsets, end = [], 0
    for size in stage_sizes:
        start = -(-end // BLOCK) * BLOCK
        offsets.append(start)
        end = start + int(size)
    return offsets


def last_stage_size(n: int, alpha: float, s: int) -> int:
    """n_s = ⌈n(1 − log_α s)⌉ of ``004`` Thm. 6.1 (3): with n_s samples at level α/s the largest
    certifiable radius is at least CERTIFY's with n samples at level α."""
    return int(math.ceil(n * (1.0 - math.log(s) / math.log(alpha))))


@torch.inference_mode()
def _check_stages(stage_sizes: Sequence[int]) -> list[int]:
    sizes = [int(n) for n in stage_sizes]
    if not sizes:
        raise ValueError("need at least one stage")
    if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"stage sizes must be positive and strictly increasing (004 Thm. 6.1), got {sizes}")
    return sizes


def certify_adaptive(
    smooth: Smooth,
    x: torch.Tensor,
    radius: float,
    n0: int,
    stage_sizes: Sequence[int],
    alpha: float,
    beta: float,
    batch_size: int,
    index: int = 0,
) -> AdaptiveResult:
    """CERTIFYADP (``004`` Alg. 2) for the predetermined L2 radius ``radius``.

    Line 2–3: ĉ_A = top class of n0 samples of phase ``"selection"`` (ties → lowest index, as
    ``Smooth.certify``). Lines 4–9, for stage i = 1 … s with s = ``len(stage_sizes)``:
    draw n_i fresh samples (phase ``"estimation"``, ranges from :func:`stage_offsets`), k = their
    count of ĉ_A;

    * line 6–7: p̲ = LOWERCONFBND(k, n_i, 1 − α/s) (Clopper–Pearson); if σΦ⁻¹(p̲) ≥ r, return
      ĉ_A (certified);
    * line 8–9, only for i < s: p̄ = UPPERCONFBND(k, n_i, 1 − β/(s−1)); if σΦ⁻¹(p̄) < r, return
      early without certifying (aborted).

    Line 10: after stage s, abstain. Guarantees (Thm. 6.1, App. E): a certificate is wrong with
    probability ≤ s·(α/s) = α; an early return happens while r is in fact certifiable (p_A ≥
    Φ(r/σ)) with probability ≤ (s−1)·β/(s−1) = β. With s = 1 there is no abort and β is unused;
    with s = 1 and n_1 = n the decision equals "``Smooth.certify`` radius ≥ r".
    """
    sizes = _check_stages(stage_sizes)
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    if not 0 < alpha < 1 or not 0 < beta < 1:
        raise ValueError(f"alpha and beta must lie in (0, 1), got {alpha}, {beta}")
    s = len(sizes)
    stage_alpha = alpha / s
    stage_beta = beta / (s - 1) if s > 1 else 0.0
    sigma = smooth.sigma

    selection = smooth.sample_counts(x, n0, batch_size, index, "selection")
    c_a = int(selection.argmax())
    used = int(n0)
    p_lower = p_upper = float("nan")
    for i, (start, n_i) in enumerate(zip(stage_offsets(sizes), sizes), start=1):
        k = int(smooth.sample_counts(x, n_i, batch_size, index, "estimation", start=start)[c_a])
        used += n_i
        p_lower = lower_confidence_bound(k, n_i, stage_alpha)
        if sigma * norm.ppf(p_lower) >= radius:  # Alg. 2 line 7
            return AdaptiveResult(c_a, c_a, True, False, i, used, p_lower, float("nan"))
        if i < s:
            p_upper = upper_confidence_bound(k, n_i, stage_beta)
            if sigma * norm.ppf(p_upper) < radius:  # Alg. 2 line 9
                return AdaptiveResult(ABSTAIN, c_a, False, True, i, used, p_lower, p_upper)
        else:
            p_upper = float("nan")
    return AdaptiveResult(ABSTAIN, c_a, False, False, s, used, p_lower, p_upper)  # line 10


# --- report helpers (004 Table 4) ------------------------------------------------------------


def stage_return_fractions(results: Sequence[AdaptiveResult], num_stages: int | None = None) -> list[float]:
    """ASR_j of ``004`` Table 4: fraction of images whose CERTIFYADP returned at stage j
    (certified or aborted or, at the last stage, abstained); entries sum to 1.

    ``num_stages`` defaults to the largest stage reached.
    """
    if not results:
        raise ValueError("no results")
    s = num_stages if num_stages is not None else max(r.stage for r in results)
    hist = np.bincount([r.stage - 1 for r in results], minlength=s)
    if len(hist) > s:
        raise ValueError(f"a result reached stage {len(hist)} > num_stages={s}")
    return (hist / len(results)).tolist()


def sample_reduction(results: Sequence[AdaptiveResult], n_plain: int) -> float:
    """SampleRF of ``004`` Table 4: plain CERTIFY's per-image samples ``n_plain`` (= n0 + n)
    divided by CERTIFYADP's mean samples per image (> 1 means adaptive sampling saves)."""
    if not results:
        raise ValueError("no results")
    return float(n_plain) / float(np.mean([r.samples for r in results]))


def certify_adaptive_images(
    smooth: Smooth,
    dataset: Sequence,
    indices: Sequence[int],
    radii: Sequence[float],
    n0: int,
    stage_sizes: Sequence[int],
    alpha: float,
    beta: float,
    batch_size: int,
    n_plain: int,
    log=lambda m: None,
) -> tuple[list[dict], list[dict]]:
    """CERTIFYADP of every image at every predetermined radius (``004`` Table 3/4 protocol).

    Returns per-image rows (idx, label, radius, predict, correct, certified, aborted, stage,
    samples) and one summary per radius: certified accuracy (certified and correct), the
    stage return fractions ASR_j and the sample-reduction factor SampleRF against plain
    CERTIFY with ``n_plain`` = n0 + n samples per image.
    """
    rows, summaries = [], []
    for radius in radii:
        results, correct = [], []
        for i in indices:
            x, label = dataset[int(i)]
            r = certify_adaptive(smooth, x, float(radius), n0, stage_sizes, alpha, beta, batch_size, int(i))
            results.append(r)
            correct.append(r.prediction == int(label))
            rows.append({
                "idx": int(i), "label": int(label), "radius": float(radius), "predict": r.prediction,
                "correct": int(r.prediction == int(label)), "certified": int(r.certified),
                "aborted": int(r.aborted), "stage": r.stage, "samples": r.samples,
            })
        summary = {
            "radius": float(radius),
            "certified_accuracy": float(np.mean(correct)),
            "stage_return_fractions": stage_return_fractions(results, len(stage_sizes)),
            "mean_samples": float(np.mean([r.samples for r in results])),
            "sample_reduction": sample_reduction(results, n_plain),
        }
        summaries.append(summary)
        log(f"CertifyAdp r={radius:g}: certified accuracy {summary['certified_accuracy']:.3f}, "
            f"sample reduction {summary['sample_reduction']:.2f}x, stage returns {summary['stage_return_fractions']}")
    return rows, summaries


# --- Soft-RS certification (001 App. A.2) ----------------------------------------------------


def hoeffding_lower_bound(mean: float, k: int, alpha: float) -> float:
    """``001`` eq. (23): z̲_A = ẑ − sqrt(−log α / (2k)), a (1 − α) lower bound on E[X] for
    X_j ∈ [0, 1] (Hoeffding, eqs. (21)–(22))."""
    if k < 1:
        raise ValueError("need k >= 1")
    return float(mean - math.sqrt(-math.log(alpha) / (2.0 * k)))


def bernstein_lower_bound(mean: float, sample_var: float, k: int, alpha: float) -> float:
    """``001`` eq. (26) (Maurer & Pontil 2009, Thm. 4 = ``001`` eq. (24)):
    z̲_A = ẑ − sqrt(2 S² log(2/α) / k) − 7 log(2/α) / (3(k − 1)), S² the unbiased sample
    variance of eq. (25)."""
    if k < 2:
        raise ValueError("the empirical Bernstein bound needs k >= 2")
    log_term = math.log(2.0 / alpha)
    return float(mean - math.sqrt(2.0 * max(sample_var, 0.0) * log_term / k) - 7.0 * log_term / (3.0 * (k - 1)))


@dataclass(frozen=True)
class SoftResult:
    """Outcome of :func:`soft_certify`: ``prediction`` (ĉ_A or ``ABSTAIN``), ``radius``
    (σΦ⁻¹(z̲_A), 0 on abstain), ``selected`` ĉ_A, and the estimation-sample statistics of
    z^{ĉ_A}: ``mean`` ẑ_A, ``variance`` S²_A (eq. (25)), ``lower`` z̲_A."""

    prediction: int
    radius: float
    selected: int
    mean: float
    variance: float
    lower: float


@torch.inference_mode()
def soft_sample_moments(
    model: torch.nn.Module,
    x: torch.Tensor,
    num: int,
    sigma: float,
    noise: NoiseStream,
    batch_size: int,
    index: int,
    phase: str,
    soft_beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAMPLEUNDERNOISE of ``001`` Alg. 2 (lines 21–29): Σ_j z(x + η_j) and Σ_j z(x + η_j)²
    per class (float64, CPU), with z = softmax(β·logits) and η_j = σ·ε_j from ``noise``
    (same addressing as ``Smooth.sample_counts``)."""
    first = second = None
    for noisy in noisy_batches(x, num, batch_size, noise, sigma, index, phase):
        z = torch.softmax(soft_beta * model(noisy).double(), dim=1)
        s1, s2 = z.sum(dim=0), (z * z).sum(dim=0)
        first = s1 if first is None else first + s1
        second = s2 if second is None else second + s2
    return first.cpu(), second.cpu()


def soft_certify(
    model: torch.nn.Module,
    x: torch.Tensor,
    n0: int,
    n: int,
    alpha: float,
    sigma: float,
    bound: str = "hoeffding",
    batch_size: int = 1000,
    index: int = 0,
    noise_seed: int = 0,
    soft_beta: float = 1.0,
    device: torch.device | str | None = None,
) -> SoftResult:
    """Soft-RS certification, ``001`` App. A.2, Alg. 2 (CERTIFYHOEFFDING / CERTIFYBERNSTEIN).

    The soft smoothed classifier is g̃(x) = argmax_c E_η[z^c(x + η)] (``001`` eq. (14)), with
    z = softmax(β·logits) (β = ``soft_beta``; β = 1 is the plain softmax network of Def. 2, the
    β-softmax is the one MACER trains with). Lines 3–4: ĉ_A = argmax of the mean of z over
    ``n0`` samples (phase ``"selection"``). Lines 5/14–15: ẑ_A, S²_A from ``n`` fresh samples
    (phase ``"estimation"``). Line 6 / 16: z̲_A by eq. (23) (``bound="hoeffding"``) or eq. (26)
    (``bound="bernstein"``). Line 7 / 17: if z̲_A > 1/2 return ĉ_A and radius σΦ⁻¹(z̲_A), else
    abstain. The radius is Thm. 2's eq. (16) with z̄_B = 1 − z̲_A (eq. (20)):
    σ/2·(Φ⁻¹(z̲_A) − Φ⁻¹(1 − z̲_A)) = σΦ⁻¹(z̲_A).

    Noise is ``NoiseStream(noise_seed, device)`` with the phases of ``Smooth.certify``, so the
    samples equal those of ``Smooth(model, …, sigma, noise_seed, device)`` for this ``index``.
    """
    if bound not in ("hoeffding", "bernstein"):
        raise ValueError(f"bound must be 'hoeffding' or 'bernstein', got {bound!r}")
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device).eval()
    noise = NoiseStream(noise_seed, device)
    sel_sum, _ = soft_sample_moments(model, x, n0, sigma, noise, batch_size, index, "selection", soft_beta)
    c_a = int(sel_sum.argmax())
    first, second = soft_sample_moments(model, x, n, sigma, noise, batch_size, index, "estimation", soft_beta)
    mean = float(first[c_a]) / n
    variance = (float(second[c_a]) - float(first[c_a]) ** 2 / n) / (n - 1) if n > 1 else float("nan")
    variance = max(variance, 0.0) if n > 1 else variance
    if bound == "hoeffding":
        lower = hoeffding_lower_bound(mean, n, alpha)
    else:
        lower = bernstein_lower_bound(mean, variance, n, alpha)
    if lower > 0.5:
        return SoftResult(c_a, float(sigma * norm.ppf(min(lower, 1.0))), c_a, mean, variance, lower)
    return SoftResult(ABSTAIN, 0.0, c_a, mean, variance, lower)
