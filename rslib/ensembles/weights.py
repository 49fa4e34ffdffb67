"""Ensemble weights for EsbRS (``000`` Sec. 3.2, App. B Alg. 2) and SWEEN (``002`` Sec. 5.1, App. C.1).

EsbRS (``000``) ensembles soft classifiers, H(x) = Σ_l w_l F^l(x), and smooths the hard decision
argmax_c H(x)_c. Its "optimal weights" minimise the Chebyshev surrogate of Eq. 7–8,

    q(w) = Σ_{i≠y} a_i Var(z̄_i),      z̄ = Σ_l w_l z^l,   z^l = F^l_y·1 − F^l   (Alg. 2, Estimation),

where a_i = e_i^{-2}, e_i = min_l E[z^l_i], and the (co)variances are taken *jointly* over
parameter perturbations (pseudo-models that imitate training seeds) and over Gaussian input
noise: all m·n pairs (pseudo-model, noisy input) are pooled, Alg. 2 lines 3–4.

By Eq. 5, Var(z̄_i) = wᵀ Cov_i w with (Cov_i)_{lm} = Cov(z^l_i, z^m_i), so
q(w) = wᵀ Q w with Q = Σ_{i≠y} a_i Cov_i, a positive semi-definite matrix. Minimising a PSD
quadratic over the simplex (Eq. 8) is a *convex* QP — contrary to ``000`` Remark 3.2 (II), which
calls it non-convex and intractable for k > 2. :func:`optimal_weights_qp` solves it exactly.

Errata and choices (see also the docstrings):

* ``000`` Eq. 10 prints A = Σ a_i (b_i + c_i + d_i) and B = −Σ a_i (c_i + 2 d_i). Expanding Eq. 9,
  b w² + c w (1 − w) + d (1 − w)² = (b − c + d) w² + (c − 2d) w + d, so the correct coefficients
  are A = Σ a_i (b_i − c_i + d_i) = Σ a_i Var(z^1_i − z^2_i) ≥ 0 and B = Σ a_i (c_i − 2 d_i).
  We implement the correct ones (tests check them against a brute-force minimisation of Eq. 9);
  :func:`quadratic_coefficients_k2` with ``as_printed=True`` returns the printed ones.
* Alg. 2 line 5 sums i = 0..c; the text (Eq. 8–10) sums i = 2..c, i.e. over every class except the
  reference class. Because z_y ≡ 0 (and a_y = 0^{-2} = ∞) the reference class must be excluded.
* Soundness (SPEC "Ensembles"): Alg. 2 computes the weights per query point with its *true*
  label. See :func:`esbrs_weights` for the three protocols.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

#: Largest k for which :func:`optimal_weights_qp` enumerates supports (2^k − 1 linear solves).
MAX_ENUMERATION_K = 16


# --------------------------------------------------------------------------------------------
# Alg. 2, PerturbModel
# --------------------------------------------------------------------------------------------
def perturb_model(
    model: nn.Module,
    fraction: float,
    std: float,
    generator: torch.Generator,
    selection: Literal["bernoulli", "exact"] = "bernoulli",
) -> nn.Module:
    """A pseudo-seed copy of ``model`` (``000`` Sec. 3.2 "we randomly select t% parameters …";
    App. B Alg. 2, function PerturbModel).

    Every *entry* of every parameter tensor (``model.parameters()``, in registration order; not
    buffers such as BatchNorm running statistics, which Alg. 2 does not call parameters) is
    selected independently with probability ``fraction`` = t — Alg. 2 "Draw a Bernoulli variable
    X from Bernoulli(t)", the precise reading of the text's "randomly select t% parameters" —
    and gets i.i.d. N(0, σ̃²) added, σ̃ = ``std``. With ``selection="exact"`` exactly ⌊t·N⌋ of
    the N entries, chosen uniformly without replacement, are perturbed instead.

    The input model is not modified. All randomness comes from ``generator`` (draws are made on
    the generator's device, then moved to the parameter's device), so the same generator state
    gives the same pseudo-model.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction t must lie in [0, 1], got {fraction}")
    if std < 0:
        raise ValueError(f"perturbation std must be non-negative, got {std}")
    if selection not in ("bernoulli", "exact"):
        raise ValueError(f"selection must be 'bernoulli' or 'exact', got {selection!r}")
    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters()]
    gdev = generator.device
    with torch.no_grad():
        if selection == "exact":
            sizes = [p.numel() for p in params]
            total = sum(sizes)
            chosen = torch.randperm(total, generator=generator, device=gdev)[: math.floor(fraction * total)]
            flat_mask = torch.zeros(total, dtype=torch.bool, device=gdev)
            flat_mask[chosen] = True
            masks = [m.view(p.shape) for m, p in zip(torch.split(flat_mask, sizes), params)]
        else:
            masks = [None] * len(params)
        for p, mask in zip(params, masks):
            if mask is None:
                mask = torch.rand(p.shape, generator=generator, device=gdev) < fraction
            delta = std * torch.randn(p.shape, generator=generator, device=gdev, dtype=p.dtype)
            # Adding mask·δ (not indexing) keeps the number of generator draws independent of
            # which entries are selected, so one parameter's mask never shifts the next one's noise.
            p.add_((delta * mask).to(p.device))
    return clone


def make_pseudo_models(
    members: Sequence[nn.Module],
    m: int,
    fraction: float,
    std: float,
    generator: torch.Generator,
    selection: Literal["bernoulli", "exact"] = "bernoulli",
) -> list[list[nn.Module]]:
    """m perturbed copies of each member, ``[[F̂^1_1..F̂^1_m], …, [F̂^k_1..F̂^k_m]]`` in eval mode
    (Alg. 2 PerturbModel; member-major draw order from one generator)."""
    if m < 1:
        raise ValueError(f"need m >= 1 pseudo-models, got {m}")
    return [
        [perturb_model(member, fraction, std, generator, selection).eval() for _ in range(m)]
        for member in members
    ]


# --------------------------------------------------------------------------------------------
# Alg. 2, Estimation and ComputeWeight lines 3–4
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coefficients:
    """Estimated quantities of ``000`` Sec. 3.2 for one (x, y), or an average of several.

    ``mean``  (k, c): z̄^l = (1/mn) Σ_j z^{l,j} (Alg. 2 line 3);
    ``cov``   (k, k, c): Cov_i[l, l'] = (1/mn) Σ_j (z^{l,j}_i − z̄^l_i)(z^{l',j}_i − z̄^{l'}_i), the
              biased (1/mn) empirical (co)variance pooled over pseudo-models and noise (line 4);
    ``a``     (c,): a_i = e_i^{-2}, e_i = min_l z̄^l_i, and a_y = 0 for the reference class y
              (the sums of Eq. 8–10 run over i ≠ y).

    For k = 2, the paper's b_i, c_i, d_i are :attr:`b`, :attr:`c`, :attr:`d`.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    a: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.cov.shape[0])

    @property
    def b(self) -> torch.Tensor:
        """b_i = Var(z^1)_ii."""
        return self.cov[0, 0]

    @property
    def c(self) -> torch.Tensor:
        """c_i = 2 Cov(z^1, z^2)_ii (note the factor 2, as in ``000``)."""
        return 2.0 * self.cov[0, 1]

    @property
    def d(self) -> torch.Tensor:
        """d_i = Var(z^2)_ii."""
        return self.cov[1, 1]

    def quadratic_form(self) -> torch.Tensor:
        """Q = Σ_i a_i Cov_i (k × k, PSD), so that q(w) = wᵀ Q w (Eq. 5 and 8)."""
        return torch.einsum("i,lmi->lm", self.a, self.cov)


@torch.no_grad()
def _soft_outputs(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """softmax(model(inputs)) in float64: ``000`` works with soft classifiers F: R^d → P(Y)."""
    device = next(model.parameters()).device
    outs = []
    for start in range(0, inputs.shape[0], batch_size):
        logits = model(inputs[start : start + batch_size].to(device))
        outs.append(torch.softmax(logits.double(), dim=1).cpu())
    return torch.cat(outs)


def estimate_coefficients(
    members: Sequence[nn.Module],
    x: torch.Tensor,
    y: int,
    sigma: float,
    n: int,
    m: int,
    t: float,
    sigma_tilde: float,
    generator: torch.Generator,
    *,
    pseudo_models: Sequence[Sequence[nn.Module]] | None = None,
    noise: torch.Tensor | None = None,
    min_margin: float = 1e-6,
    batch_size: int = 1000,
) -> Coefficients:
    """Alg. 2 ComputeWeight lines 1–4 for query point ``x`` (one image, no batch dim) and label ``y``.

    1. PerturbModel: m pseudo-models per member (:func:`make_pseudo_models`; skipped when
       ``pseudo_models`` is given, e.g. to reuse them over many held-out images).
    2. Estimation: n noisy inputs x_j = x + σ ε_j, ε_j ~ N(0, I) — drawn from ``generator`` after
       the pseudo-models, or given as ``noise`` (n, *x.shape) of unit-variance draws — and the
       *same* x_j are fed to every pseudo-model of every member, so that Cov(z^l, z^{l'})
       captures the shared input noise. z^{l,(i−1)n+j} = F̂^l_i(x_j)_y·1 − F̂^l_i(x_j).
    3. z̄^l and a_i = min_l{z̄^l_i}^{-2} (for k = 2 exactly Alg. 2's min{z̄^1_i, z̄^2_i}^{-2}).
       e_i is clamped to |e_i| ≥ ``min_margin`` so that a tie (z̄ = 0) gives a large finite a_i
       instead of ∞; a negative e_i (some member prefers class i to y) keeps the paper's e_i^{-2}.
    4. b, c, d (and for general k the full per-class covariance) with the 1/mn normalisation
       of Alg. 2 line 4. Member l's sample j pairs with member l''s sample j (same pseudo-model
       index, same noisy input), as in Alg. 2's indexing z^{l,(i−1)n+j}.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 noisy inputs, got {n}")
    if pseudo_models is None:
        pseudo_models = make_pseudo_models(members, m, t, sigma_tilde, generator)
    if len(pseudo_models) != len(members):
        raise ValueError("pseudo_models must hold one list per member")
    if noise is None:
        noise = torch.randn((n, *x.shape), generator=generator, device=generator.device, dtype=x.dtype)
    if noise.shape != (n, *x.shape):
        raise ValueError(f"noise must have shape {(n, *x.shape)}, got {tuple(noise.shape)}")
    noisy = x.unsqueeze(0) + sigma * noise.to(x.device)  # never clipped (SPEC smoothing convention)

    # rows ordered pseudo-model-major: row (i−1)n + j is F̂_i(x_j), Alg. 2 Estimation
    probs = torch.stack([torch.cat([_soft_outputs(model, noisy, batch_size) for model in pseudo]) for pseudo in pseudo_models])
    return coefficients_from_probabilities(probs, y, min_margin)


def coefficients_from_probabilities(probs: torch.Tensor, y: int, min_margin: float = 1e-6) -> Coefficients:
    """Alg. 2 lines 3–4 from the pooled soft outputs ``probs`` (k, m·n, c) of every member's
    pseudo-models on the shared noisy inputs (row (i−1)n + j = F̂_i(x_j), the same row order for
    every member). See :func:`estimate_coefficients` for the estimates and the clamp."""
    probs = probs.double()
    num_classes = probs.shape[2]
    if not 0 <= y < num_classes:
        raise ValueError(f"label {y} outside 0..{num_classes - 1}")
    z = probs[:, :, y : y + 1] - probs  # (k, mn, c)

    mean = z.mean(dim=1)  # (k, c)
    centred = z - mean.unsqueeze(1)
    cov = torch.einsum("lji,mji->lmi", centred, centred) / z.shape[1]  # (k, k, c)

    e = mean.min(dim=0).values
    e = torch.where(e.abs() < min_margin, torch.full_like(e, min_margin), e)
    a = e.pow(-2)
    a[y] = 0.0  # sums of Eq. 8–10 exclude the reference class (z_y ≡ 0)
    return Coefficients(mean=mean, cov=cov, a=a)


def pseudo_model_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    index: int,
    member_key: int,
    noise_seed: int,
    sigma: float,
    n: int,
    m: int,
    t: float,
    sigma_tilde: float,
    batch_size: int = 1000,
) -> torch.Tensor:
    """One member's share of Alg. 2's Estimation for test image ``index``: softmax outputs of its
    m pseudo-models (PerturbModel redrawn for this query point, as Alg. 2 does) on n noisy inputs,
    (m·n, c) float64, rows pseudo-model-major.

    The noisy inputs come from :class:`rslib.certification.noise.NoiseStream` phase ``"weights"`` of image
    ``index`` — the same for every member, so that stacking members' outputs gives exactly the
    pooled samples of :func:`estimate_coefficients` — and the pseudo-models from a generator
    seeded by (``noise_seed``, ``index``, ``member_key``), distinct per member. Computed once per
    member and stored with its outputs (:func:`rslib.ensembles.outputs.compute_member_outputs`), this
    lets every ensemble's per-point weights (protocols "paper" and "predicted") be a reduction
    over stored tensors, like the certification itself.
    """
    from rslib.certification.noise import NoiseStream, mix_seed

    device = next(model.parameters()).device
    noise = NoiseStream(noise_seed, device).sample(index, "weights", 0, n, tuple(x.shape))
    noisy = x.to(device).unsqueeze(0) + sigma * noise
    # drawn on the model's device: a ResNet-110 pseudo-model is millions of draws
    generator = torch.Generator(device=device).manual_seed(mix_seed(noise_seed, index, member_key))
    pseudo = make_pseudo_models([model], m, t, sigma_tilde, generator)[0]
    return torch.cat([_soft_outputs(p, noisy, batch_size) for p in pseudo])


def average_coefficients(coefficients: Sequence[Coefficients]) -> Coefficients:
    """Average of several coefficient sets, for data-independent ("global") weights.

    We average the *products* a_i·Cov_i (stored as ``cov`` with ``a`` set to ones) so that
    ``objective(w, average) = mean_j q_j(w)`` exactly: the global weight minimises the average
    of the per-point objectives of Eq. 8 over the held-out pairs.
    """
    if not coefficients:
        raise ValueError("need at least one coefficient set")
    weighted = torch.stack([co.cov * co.a for co in coefficients]).mean(dim=0)
    mean = torch.stack([co.mean for co in coefficients]).mean(dim=0)
    return Coefficients(mean=mean, cov=weighted, a=torch.ones_like(coefficients[0].a))


def objective(w: torch.Tensor | np.ndarray | Sequence[float], coefficients: Coefficients) -> float:
    """q(w) = Σ_{i≠y} a_i Var(z̄_i) = Σ_i a_i wᵀ Cov_i w (Eq. 5, 8; for k = 2 Eq. 9)."""
    w_t = torch.as_tensor(np.asarray(w, dtype=np.float64))
    if w_t.shape != (coefficients.k,):
        raise ValueError(f"w must have shape ({coefficients.k},), got {tuple(w_t.shape)}")
    q = coefficients.quadratic_form().double()
    return float(w_t @ q @ w_t)


# --------------------------------------------------------------------------------------------
# Eq. 10 (k = 2) and the exact simplex QP (k > 2)
# --------------------------------------------------------------------------------------------
def quadratic_coefficients_k2(coefficients: Coefficients, as_printed: bool = False) -> tuple[float, float, float]:
    """(A, B, C) with q(w_1) = A w_1² + B w_1 + C on w_2 = 1 − w_1 (Eq. 9–10).

    Correct expansion of Eq. 9: A = Σ a_i (b_i − c_i + d_i), B = Σ a_i (c_i − 2 d_i), C = Σ a_i d_i.
    ``as_printed=True`` returns Eq. 10 / Alg. 2 line 5 as printed in ``000``,
    A = Σ a_i (b_i + c_i + d_i), B = −Σ a_i (c_i + 2 d_i) — sign errors in the c_i terms; kept only
    to let users quantify the difference.
    """
    if coefficients.k != 2:
        raise ValueError(f"the closed form needs k = 2 members, got {coefficients.k}")
    a = coefficients.a.double()
    b, c, d = coefficients.b.double(), coefficients.c.double(), coefficients.d.double()
    if as_printed:
        return float((a * (b + c + d)).sum()), float(-(a * (c + 2 * d)).sum()), float((a * d).sum())
    return float((a * (b - c + d)).sum()), float((a * (c - 2 * d)).sum()), float((a * d).sum())


def optimal_weights_k2(coefficients: Coefficients, as_printed: bool = False) -> torch.Tensor:
    """Closed-form minimiser of Eq. 10, Alg. 2 ComputeWeight line 5: ``tensor([w1, 1 − w1])``.

    If A > 0 and 0 ≤ −B/(2A) ≤ 1: w_1 = −B/(2A). Otherwise the minimum of the quadratic on [0, 1]
    is at an end point: w_1 = 0 if A + B > 0 (q(1) = A+B+C > C = q(0)), else w_1 = 1 — Alg. 2's
    rule, which also covers the degenerate A = 0 (linear q; for A = B = 0 q is constant and the
    paper's tie-break w_1 = 1 is kept). With the correct A (≥ 0) the vertex outside [0, 1] always
    lands on the nearer end point, so this is the exact constrained minimiser.
    """
    A, B, _ = quadratic_coefficients_k2(coefficients, as_printed)
    if A > 0 and 0.0 <= -B / (2 * A) <= 1.0:
        w1 = -B / (2 * A)
    else:
        w1 = 0.0 if A + B > 0 else 1.0
    return torch.tensor([w1, 1.0 - w1], dtype=torch.float64)


def optimal_weights_qp(
    problem: Coefficients | torch.Tensor | np.ndarray,
    linear: torch.Tensor | np.ndarray | None = None,
    tol: float = 1e-10,
) -> torch.Tensor:
    """Exact minimiser of wᵀ Q w + lᵀ w over the simplex {w ≥ 0, Σ w = 1} (Eq. 8, any k).

    ``problem`` is a :class:`Coefficients` (Q = Σ a_i Cov_i) or a symmetric PSD matrix Q;
    ``linear`` is an optional l.

    Method (k ≤ :data:`MAX_ENUMERATION_K`): enumerate supports S ⊆ {1..k}; for each, solve the
    KKT system of the equality-constrained problem on the face, [2Q_SS 1; 1ᵀ 0][w_S; μ] = [−l_S; 1];
    keep solutions with w_S ≥ −tol and return the one with the smallest objective. This is exact:
    take an optimal w* of minimal support S*. The minimisers of the face problem on aff(S*) form an
    affine set containing w* (a convex function's minimiser over aff(S*) restricted to the
    relatively open face is a global face minimiser). Were that set more than a point, moving
    along it would zero a coordinate and give an optimum of smaller support; so the KKT system on
    S* is non-singular and returns w*. Every kept candidate is feasible, so the minimum over
    candidates is the optimum. Singular faces are solved by least squares (their feasible
    solutions are still valid candidates). For larger k we fall back to SciPy SLSQP with
    ``ftol = tol`` from the uniform start (convex problem, so its KKT point is optimal).
    """
    q = problem.quadratic_form() if isinstance(problem, Coefficients) else torch.as_tensor(problem)
    Q = q.detach().double().cpu().numpy()
    Q = 0.5 * (Q + Q.T)
    k = Q.shape[0]
    if Q.shape != (k, k) or k < 1:
        raise ValueError(f"Q must be square, got shape {Q.shape}")
    lin = np.zeros(k) if linear is None else torch.as_tensor(linear).double().cpu().numpy().reshape(k)
    if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(lin))):
        raise ValueError("QP data must be finite")

    def value(w: np.ndarray) -> float:
        return float(w @ Q @ w + lin @ w)

    if k > MAX_ENUMERATION_K:
        from scipy.optimize import minimize

        res = minimize(
            value,
            np.full(k, 1.0 / k),
            jac=lambda w: 2 * Q @ w + lin,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(k)}],
            options={"ftol": tol, "maxiter": 1000},
        )
        best = np.clip(res.x, 0.0, None)
        return torch.from_numpy(best / best.sum())

    scale = max(1.0, float(np.abs(Q).max()), float(np.abs(lin).max()))
    best, best_val = None, math.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * Q[np.ix_(s, s)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.concatenate([-lin[s], [1.0]])
            try:
                sol = np.linalg.solve(kkt, rhs)
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            w_s = sol[:size]
            if not np.all(np.isfinite(w_s)) or w_s.min() < -tol or abs(w_s.sum() - 1.0) > 1e-8:
                continue
            w = np.zeros(k)
            w[s] = np.clip(w_s, 0.0, None)
            w /= w.sum()
            val = value(w)
            # prefer smaller supports on (numerical) ties: the first found wins unless strictly better
            if val < best_val - 1e-14 * scale:
                best, best_val = w, val
    assert best is not None  # every vertex (size-1 support) is a feasible candidate
    return torch.from_numpy(best)


def solve_weights(coefficients: Coefficients, as_printed: bool = False) -> torch.Tensor:
    """Closed form (Eq. 10) for k = 2 (``as_printed``: the printed coefficients, see
    :func:`quadratic_coefficients_k2`), exact QP (:func:`optimal_weights_qp`) for k > 2."""
    if coefficients.k == 1:
        return torch.ones(1, dtype=torch.float64)
    if coefficients.k == 2:
        return optimal_weights_k2(coefficients, as_printed)
    return optimal_weights_qp(coefficients)


# --------------------------------------------------------------------------------------------
# Protocols (SPEC "Ensembles", Soundness)
# --------------------------------------------------------------------------------------------
def fit_global_weights(
    members: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    sigma: float,
    n: int,
    m: int,
    t: float,
    sigma_tilde: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Data-independent weights: minimise the average of Eq. 8's q over held-out (x, y) pairs.

    One set of m pseudo-models per member is drawn once and reused for every image (the
    pseudo-models stand for training randomness, which does not depend on x); each image gets its
    own n noisy inputs. Solved with :func:`solve_weights` on :func:`average_coefficients`.
    ``images`` must be training images not used to train the members (e.g. SWEEN's held-out split).
    """
    if len(images) == 0:
        raise ValueError("need at least one held-out image")
    pseudo = make_pseudo_models(members, m, t, sigma_tilde, generator)
    coefs = [
        estimate_coefficients(members, img, int(lab), sigma, n, m, t, sigma_tilde, generator, pseudo_models=pseudo)
        for img, lab in zip(images, labels)
    ]
    return solve_weights(average_coefficients(coefs))


def esbrs_weights(
    protocol: Literal["paper", "predicted", "global"],
    members: Sequence[nn.Module],
    x: torch.Tensor | None = None,
    y_true: int | None = None,
    selection_prediction: int | None = None,
    heldout: tuple[torch.Tensor, torch.Tensor | Sequence[int]] | None = None,
    *,
    sigma: float,
    n: int = 10,
    m: int = 10,
    t: float = 0.3,
    sigma_tilde: float = 0.01,
    generator: torch.Generator,
) -> torch.Tensor:
    """EsbRS optimal weights (Alg. 2; defaults m = n = 10, t = 0.3, σ̃ = 0.01 from ``000`` Table 3).

    Protocols:

    ``"paper"``
        As published: per query point x with its TRUE label ``y_true``. **Not a sound
        certificate**: the base classifier depends on the test label (label leakage) and on x,
        so the resulting "certified" radius is not a guarantee for any fixed classifier.
    ``"predicted"``
        Per query point, with the label replaced by ``selection_prediction``, the class CERTIFY
        selected from its n0 selection samples. No label leakage; the bound then holds for the
        smoothed ensemble with the weights frozen at w(x) — but the weights still depend on x,
        so it is not a certificate for one fixed input-to-class map. The selection samples must
        be independent of the estimation samples (use a separate noise phase).
    ``"global"``
        Data-independent weights fitted once on ``heldout = (images, labels)`` of held-out
        *training* images (:func:`fit_global_weights`). The ensemble is then a fixed classifier
        and CERTIFY's certificate is sound. Call once and reuse the weights for every test point.
    """
    if protocol == "paper":
        if x is None or y_true is None:
            raise ValueError("protocol 'paper' needs x and y_true")
        label = int(y_true)
    elif protocol == "predicted":
        if x is None or selection_prediction is None:
            raise ValueError("protocol 'predicted' needs x and selection_prediction")
        if int(selection_prediction) < 0:
            raise ValueError("selection_prediction is an abstention (-1); no class to weight for")
        label = int(selection_prediction)
    elif protocol == "global":
        if heldout is None:
            raise ValueError("protocol 'global' needs heldout = (images, labels)")
        return fit_global_weights(members, heldout[0], heldout[1], sigma, n, m, t, sigma_tilde, generator)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: paper, predicted, global")
    coefs = estimate_coefficients(members, x, label, sigma, n, m, t, sigma_tilde, generator)
    return solve_weights(coefs)
