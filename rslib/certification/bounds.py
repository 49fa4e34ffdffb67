"""The statistics of Cohen et al.'s CERTIFY and PREDICT (Cohen et al. 2019, Sec. 3.2, Thm. 1),
without torch: the one-sided Clopper–Pearson bound, the certified radius, the largest radius a
sample budget can certify, and the budgets that can never certify. The workflow reads
these while it builds the DAG (rslib.experiment.plan's warnings), so only ``scipy.special`` is
imported here (``scipy.stats.beta.ppf`` and ``norm.ppf`` are ``betaincinv`` and ``ndtri``: the same
numbers)."""

from __future__ import annotations

from scipy.special import betaincinv, ndtri


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - α) Clopper–Pearson lower bound on a binomial proportion (CERTIFY's
    LOWERCONFBOUND, Cohen et al. 2019, Sec. 3.2).

    ``beta.ppf(α, n_a, n - n_a + 1)``; 0 when ``n_a = 0`` (the Beta quantile is undefined there).
    Equals ``proportion_confint(n_a, n, alpha=2α, method="beta")[0]`` used by Cohen et al.
    """
    if not 0 <= n_a <= n:
        raise ValueError(f"need 0 <= n_a <= n, got n_a={n_a}, n={n}")
    if n_a == 0:
        return 0.0
    return float(betaincinv(n_a, n - n_a + 1, alpha))


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """Radius σ·Φ⁻¹(p̲_A) of Cohen et al. Thm. 1 (with p̲_B = 1 − p̲_A); caller checks p̲_A ≥ 0.5."""
    return float(sigma * ndtri(p_a_lower))


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest radius CERTIFY can return with n samples: all n votes for the top class give
    p̲_A = α^(1/n), so the radius is σ·Φ⁻¹(α^(1/n)). At n = 100,000 and α = 0.001 this is ≈ 3.81σ."""
    return certified_radius(alpha ** (1.0 / n), sigma)


def certify_always_abstains(n: int, alpha: float) -> bool:
    """Whether CERTIFY abstains on every input with ``n`` estimation samples: even n of n votes
    give p̲_A = α^(1/n) < ½ (n < log α / log ½: 10 samples at α = 0.001)."""
    return alpha ** (1.0 / n) < 0.5
