"""Tests for rslib.certification.adaptive: CERTIFYADP (004 Alg. 2, Thm. 6.1) and Soft-RS (001 App. A.2).

Statistical tests use a 1-d linear base classifier with logits [0, x], so with noise σ·ε
P(f(x + σε) = 1) = Φ(x/σ) exactly. Noise is deterministic per (noise_seed, index), so every
statistical test is reproducible; thresholds are 0.999 binomial quantiles, and each such test
is paired with a "broken" variant (no Bonferroni / no β split / point estimates) that must fail
the same check, which shows the check has power.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

import rslib.certification.adaptive as adaptive
from rslib.certification.adaptive import (
    AdaptiveResult,
    bernstein_lower_bound,
    certify_adaptive,
    hoeffding_lower_bound,
    last_stage_size,
    sample_reduction,
    soft_certify,
    stage_offsets,
    stage_return_fractions,
    upper_confidence_bound,
)
from rslib.certification.bounds import lower_confidence_bound, max_certifiable_radius
from rslib.certification.smooth import Smooth

SIGMA = 0.5


def line_model(scale: float = 1.0) -> nn.Module:
    """Logits [0, scale·x] for inputs of shape (N, 1): class 1 iff x > 0."""
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [scale]]))
        lin.bias.zero_()
    return lin


def smooth_at(noise_seed: int = 0) -> Smooth:
    return Smooth(line_model(), num_classes=2, sigma=SIGMA, noise_seed=noise_seed, device="cpu")


def point(p_a: float) -> torch.Tensor:
    """The input whose true P(class 1) is p_a."""
    return torch.tensor([SIGMA * float(norm.ppf(p_a))])


def binomial_limit(trials: int, rate: float) -> int:
    """Largest failure count consistent (at 0.999) with a failure probability ≤ rate."""
    return int(binom.ppf(0.999, trials, rate))


# --- plumbing ---------------------------------------------------------------------------------


def test_stage_offsets_are_disjoint_block_aligned():
    assert stage_offsets([100, 1000, 10000]) == [0, 100, 1100]
    assert stage_offsets([150, 250, 300]) == [0, 200, 500]
    offs = stage_offsets([150, 250, 300])
    ends = [o + n for o, n in zip(offs, [150, 250, 300])]
    assert all(o % 100 == 0 for o in offs) and all(e <= o for e, o in zip(ends, offs[1:]))


def test_stage_counts_match_smooth_sampling():
    smooth, x = smooth_at(3), point(0.7)
    whole = smooth.sample_counts(x, 700, 200, 5, "estimation")
    assert torch.equal(smooth.sample_counts(x, 300, 200, 5, "estimation", start=0), smooth.sample_counts(x, 300, 100, 5, "estimation"))
    parts = smooth.sample_counts(x, 300, 300, 5, "estimation") + smooth.sample_counts(x, 400, 100, 5, "estimation", start=300)
    assert torch.equal(parts, whole)
    with pytest.raises(ValueError):
        smooth.sample_counts(x, 100, 100, 5, "estimation", start=50)


def test_stage_size_validation():
    smooth, x = smooth_at(), point(0.9)
    for bad in ([], [100, 100], [1000, 100], [0, 100]):
        with pytest.raises(ValueError):
            certify_adaptive(smooth, x, 0.25, 100, bad, 0.001, 0.001, 1000)


def test_single_stage_equals_certify():
    """s = 1, n_1 = n: the decision is exactly "Smooth.certify radius ≥ r" (same samples, α/1)."""
    smooth, r, n = smooth_at(1), 0.25, 500
    outcomes = set()
    for i in range(40):
        x = point(0.76)
        c, radius = smooth.certify(x, 100, n, 0.01, 500, index=i)
        res = certify_adaptive(smooth, x, r, 100, [n], 0.01, 0.5, 500, index=i)
        assert res.selected == c or c == Smooth.ABSTAIN
        assert res.certified == (c != Smooth.ABSTAIN and radius >= r)
        assert not res.aborted and res.stage == 1 and res.samples == 100 + n
        outcomes.add(res.certified)
    assert outcomes == {True, False}  # the point is near the threshold: both decisions occur


def test_last_stage_size_keeps_max_radius():
    """004 Thm. 6.1 (3): n_s = ⌈n(1 − log_α s)⌉ at α/s reaches CERTIFY's maximum radius at (n, α)."""
    n, alpha, s = 100_000, 0.001, 4
    n_s = last_stage_size(n, alpha, s)
    assert n_s == 120_069 or n_s == 120_070
    assert max_certifiable_radius(n_s, alpha / s, 1.0) >= max_certifiable_radius(n, alpha, 1.0)
    assert max_certifiable_radius(n_s - 1, alpha / s, 1.0) < max_certifiable_radius(n, alpha, 1.0)


def test_upper_confidence_bound_mirrors_lower():
    for k, n, a in [(0, 10, 0.05), (3, 10, 0.01), (97, 100, 0.001), (100, 100, 0.1)]:
        assert upper_confidence_bound(k, n, a) == pytest.approx(1 - lower_confidence_bound(n - k, n, a), abs=1e-12)
    assert upper_confidence_bound(5, 5, 0.01) == 1.0


# --- statistical guarantees of CERTIFYADP (004 Thm. 6.1 (1), (2)) -----------------------------

R = 0.25  # threshold p* = Φ(R/σ) = Φ(0.5)
STAGES = [100, 300, 1000]
TRIALS = 300


def run_trials(p_true: float, alpha: float, beta: float, stages=STAGES, trials=TRIALS) -> list[AdaptiveResult]:
    smooth, x = smooth_at(11), point(p_true)
    return [certify_adaptive(smooth, x, R, 100, stages, alpha, beta, 1000, index=i) for i in range(trials)]


def false_certificates(results: list[AdaptiveResult], p_true: float) -> int:
    """Certificates of radius R although the certified class's true probability is < Φ(R/σ)."""
    threshold = norm.cdf(R / SIGMA)
    probs = {1: p_true, 0: 1 - p_true}
    return sum(r.certified and probs[r.prediction] < threshold for r in results)


P_BELOW = float(norm.cdf(R / SIGMA - 0.01))  # just below the certification threshold
ALPHA = 0.2


def test_adaptive_certificates_are_sound():
    results = run_trials(P_BELOW, ALPHA, 0.02)
    assert false_certificates(results, P_BELOW) <= binomial_limit(TRIALS, ALPHA)


@pytest.mark.parametrize("broken", ["no_bonferroni", "point_estimate"])
def test_soundness_check_has_power(monkeypatch, broken):
    """The same check fails for CERTIFYADP without the α/s split or with point estimates."""
    s = len(STAGES)
    if broken == "no_bonferroni":
        monkeypatch.setattr(adaptive, "lower_confidence_bound", lambda k, n, a: lower_confidence_bound(k, n, a * s))
    else:
        monkeypatch.setattr(adaptive, "lower_confidence_bound", lambda k, n, a: k / n)
    results = run_trials(P_BELOW, ALPHA, 0.02)
    assert false_certificates(results, P_BELOW) > binomial_limit(TRIALS, ALPHA)


P_ABOVE = float(norm.cdf(R / SIGMA + 0.01))  # just above: certification is possible in principle
BETA = 0.2
ABORT_STAGES = [100, 200, 300, 400]


def early_aborts(results: list[AdaptiveResult]) -> int:
    return sum(r.aborted for r in results)


def test_abort_rule_respects_beta():
    results = run_trials(P_ABOVE, 0.001, BETA, ABORT_STAGES)
    assert all(r.aborted == (not r.certified and r.stage < len(ABORT_STAGES)) for r in results)
    assert early_aborts(results) <= binomial_limit(TRIALS, BETA)
    assert early_aborts(results) > 0  # the abort path is exercised


@pytest.mark.parametrize("broken", ["no_split", "point_estimate"])
def test_abort_check_has_power(monkeypatch, broken):
    """Aborting with the upper bound at β per stage (no split over s−1 stages) or with the
    point estimate aborts too often on a certifiable point."""
    s = len(ABORT_STAGES)
    if broken == "no_split":
        monkeypatch.setattr(adaptive, "upper_confidence_bound", lambda k, n, b: upper_confidence_bound(k, n, b * (s - 1)))
    else:
        monkeypatch.setattr(adaptive, "upper_confidence_bound", lambda k, n, b: k / n)
    results = run_trials(P_ABOVE, 0.001, BETA, ABORT_STAGES)
    assert early_aborts(results) > binomial_limit(TRIALS, BETA)


# --- sample reduction ---------------------------------------------------------------------------


def test_easy_point_certifies_at_first_stage():
    smooth, x = smooth_at(), point(1 - 1e-9)
    results = [certify_adaptive(smooth, x, R, 100, [100, 10_000, 120_070], 0.001, 0.001, 1000, index=i) for i in range(5)]
    for res in results:
        assert res.certified and res.prediction == 1 and res.stage == 1 and res.samples == 200
    assert stage_return_fractions(results, 3) == [1.0, 0.0, 0.0]
    assert sample_reduction(results, 100 + 100_000) == pytest.approx(100_100 / 200)


def test_hopeless_point_aborts_at_first_stage():
    smooth, x = smooth_at(), point(0.55)
    res = certify_adaptive(smooth, x, R, 100, [1000, 10_000, 120_070], 0.001, 0.001, 1000, index=0)
    assert res.aborted and not res.certified and res.prediction == Smooth.ABSTAIN
    assert res.stage == 1 and res.samples == 1100 and res.p_upper < norm.cdf(R / SIGMA)


def test_report_helpers_hand_computed():
    def mk(stage, samples):
        return AdaptiveResult(-1, 0, False, False, stage, samples, 0.0, 0.0)

    results = [mk(1, 200), mk(1, 200), mk(2, 1200), mk(3, 11200)]
    assert stage_return_fractions(results) == [0.5, 0.25, 0.25]
    assert stage_return_fractions(results, 4) == [0.5, 0.25, 0.25, 0.0]
    assert sample_reduction(results, 10_100) == pytest.approx(10_100 / 3200)
    with pytest.raises(ValueError):
        stage_return_fractions(results, 2)


# --- Hoeffding / empirical-Bernstein bounds (001 eqs. (23), (26)) ---------------------------------


def test_bounds_hand_computed():
    # eq. (23): 0.9 − sqrt(ln(1000)/200) = 0.9 − 0.1858461...
    assert hoeffding_lower_bound(0.9, 100, 0.001) == pytest.approx(0.7141538906, abs=1e-9)
    # eq. (26): 0.9 − sqrt(2·0.01·ln(2000)/100) − 7·ln(2000)/(3·99) = 0.9 − 0.0389895 − 0.1791460
    assert bernstein_lower_bound(0.9, 0.01, 100, 0.001) == pytest.approx(0.6818646587, abs=1e-9)


COVERAGE_TRIALS = 3000


def coverage_failures(sampler, mean: float, k: int, alpha: float, which: str) -> int:
    rng = np.random.default_rng(1234)
    data = sampler(rng, (COVERAGE_TRIALS, k))
    means, variances = data.mean(axis=1), data.var(axis=1, ddof=1)
    fails = 0
    for m, v in zip(means, variances):
        if which == "hoeffding":
            low = hoeffding_lower_bound(m, k, alpha)
        elif which == "bernstein":
            low = bernstein_lower_bound(m, v, k, alpha)
        else:  # broken: the point estimate
            low = m
        fails += low > mean
    return fails


SAMPLERS = {
    "bernoulli": (lambda rng, shape: (rng.random(shape) < 0.3).astype(float), 0.3),
    "beta": (lambda rng, shape: rng.beta(2.0, 5.0, shape), 2.0 / 7.0),
}


@pytest.mark.parametrize("data", sorted(SAMPLERS))
@pytest.mark.parametrize("which", ["hoeffding", "bernstein"])
def test_bound_coverage(data, which):
    sampler, mean = SAMPLERS[data]
    alpha = 0.05
    assert coverage_failures(sampler, mean, 50, alpha, which) <= binomial_limit(COVERAGE_TRIALS, alpha)


@pytest.mark.parametrize("data", sorted(SAMPLERS))
def test_coverage_check_has_power(data):
    sampler, mean = SAMPLERS[data]
    alpha = 0.05
    assert coverage_failures(sampler, mean, 50, alpha, "point") > binomial_limit(COVERAGE_TRIALS, alpha)


def test_bernstein_tighter_for_low_variance():
    rng = np.random.default_rng(0)
    data = rng.beta(200.0, 2.0, 1000)
    m, v = data.mean(), data.var(ddof=1)
    assert bernstein_lower_bound(m, v, 1000, 0.001) > hoeffding_lower_bound(m, 1000, 0.001) + 0.03
    # and for high-variance (Bernoulli ½) data Hoeffding wins: the comparison is not vacuous
    assert bernstein_lower_bound(0.5, 0.25, 1000, 0.001) < hoeffding_lower_bound(0.5, 1000, 0.001)


# --- Soft-RS certification (001 App. A.2, Alg. 2) ---------------------------------------------


class ConstantSoftmax(nn.Module):
    """Returns logits log(probs) whatever the input: z is constant, so S² = 0."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(probs).log(), requires_grad=False)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


def test_soft_certify_hand_computed():
    model, x = ConstantSoftmax([0.1, 0.8, 0.1]), torch.zeros(1)
    hoef = soft_certify(model, x, 100, 1000, 0.001, 0.25, "hoeffding", device="cpu")
    # z̲ = 0.8 − sqrt(ln(1000)/2000) = 0.7412303; radius = 0.25·Φ⁻¹(z̲)
    assert hoef.prediction == 1 and hoef.lower == pytest.approx(0.7412303000, abs=1e-6)
    assert hoef.radius == pytest.approx(0.1617857491, abs=1e-6)
    bern = soft_certify(model, x, 100, 1000, 0.001, 0.25, "bernstein", device="cpu")
    # S² = 0: z̲ = 0.8 − 7·ln(2000)/(3·999) = 0.7822468
    assert bern.variance == pytest.approx(0.0, abs=1e-9)
    assert bern.prediction == 1 and bern.lower == pytest.approx(0.7822468077, abs=1e-6)
    assert bern.radius == pytest.approx(0.1949509435, abs=1e-6)
    # radius equals σ/2·(Φ⁻¹(z̲_A) − Φ⁻¹(1 − z̲_A)) (eq. (16) with z̄_B = 1 − z̲_A, eq. (20))
    assert bern.radius == pytest.approx(0.125 * (norm.ppf(bern.lower) - norm.ppf(1 - bern.lower)), abs=1e-9)


def test_soft_certify_abstains_at_half():
    model, x = ConstantSoftmax([0.45, 0.55]), torch.zeros(1)
    res = soft_certify(model, x, 100, 1000, 0.001, 0.25, "hoeffding", device="cpu")
    assert res.selected == 1 and res.prediction == Smooth.ABSTAIN and res.radius == 0.0
    with pytest.raises(ValueError):
        soft_certify(model, x, 100, 1000, 0.001, 0.25, "chernoff", device="cpu")


def test_soft_certify_uses_smooth_noise():
    """With β → ∞ the β-softmax is one-hot, so ẑ_A·n equals Smooth's estimation count on the
    same noise stream (and the selection agrees)."""
    smooth = Smooth(line_model(), num_classes=2, sigma=SIGMA, noise_seed=7, device="cpu")
    for i, p in enumerate([0.3, 0.6, 0.9]):
        x = point(p)
        res = soft_certify(line_model(), x, 100, 500, 0.001, SIGMA, "bernstein", 200, index=i, noise_seed=7, soft_beta=1e9, device="cpu")
        sel = smooth.sample_counts(x, 100, 100, i, "selection")
        est = smooth.sample_counts(x, 500, 100, i, "estimation")
        assert res.selected == int(sel.argmax())
        assert res.mean * 500 == pytest.approx(float(est[res.selected]), abs=1e-6)
