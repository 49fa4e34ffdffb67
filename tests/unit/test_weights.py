"""Tests for rslib.ensembles.weights: EsbRS optimal weights (000 Sec. 3.2, Alg. 2) and SWEEN weights (002)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import binom
from torch import nn

from rslib.ensembles.weights import (
    Coefficients,
    average_coefficients,
    esbrs_weights,
    estimate_coefficients,
    objective,
    optimal_weights_k2,
    optimal_weights_qp,
    perturb_model,
    quadratic_coefficients_k2,
    solve_weights,
)
from rslib.ensembles.sween import SweenFit, sween_loss, sween_weights


def _tiny(d: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes))


def _random_coefficients(rng: np.random.Generator, k: int = 2, c: int = 4, y: int = 0) -> Coefficients:
    """Random but valid coefficients: each Cov_i is a PSD Gram matrix, a_i > 0 except a_y = 0."""
    cov = np.empty((k, k, c))
    for i in range(c):
        g = rng.normal(size=(k, k + 1)) * rng.uniform(0.1, 2.0, size=(k, 1))
        cov[:, :, i] = g @ g.T
    a = rng.uniform(0.1, 3.0, size=c)
    a[y] = 0.0
    return Coefficients(mean=torch.zeros(k, c, dtype=torch.float64), cov=torch.from_numpy(cov), a=torch.from_numpy(a))


def _brute_force_k2(co: Coefficients) -> tuple[float, float]:
    grid = np.linspace(0.0, 1.0, 200_001)
    # evaluate Eq. 9 directly from a, b, c, d — independent of the (A, B, C) algebra
    a, b, c, d = (t.numpy() for t in (co.a, co.b, co.c, co.d))
    q = (a[None] * (b[None] * grid[:, None] ** 2 + c[None] * grid[:, None] * (1 - grid[:, None])
                    + d[None] * (1 - grid[:, None]) ** 2)).sum(1)
    j = int(q.argmin())
    return float(grid[j]), float(q[j])


# ------------------------------------------------------------------------------------ k = 2
def test_k2_closed_form_matches_brute_force_including_boundaries():
    rng = np.random.default_rng(0)
    seen_interior = seen_boundary = 0
    for _ in range(40):
        co = _random_coefficients(rng)
        w = optimal_weights_k2(co)
        w1_grid, q_grid = _brute_force_k2(co)
        q_closed = objective(w, co)
        assert w.sum().item() == pytest.approx(1.0) and 0.0 <= w[0].item() <= 1.0
        assert q_closed <= q_grid + 1e-9 * max(1.0, abs(q_grid))
        assert abs(w[0].item() - w1_grid) < 1e-4 or abs(q_closed - q_grid) < 1e-9
        if w[0].item() in (0.0, 1.0):
            seen_boundary += 1
        else:
            seen_interior += 1
    # strongly positively correlated members, member 2 much noisier: the unconstrained optimum of
    # Eq. 10 lies beyond w1 = 1 and the closed form must return the boundary
    cov = torch.zeros(2, 2, 3, dtype=torch.float64)
    cov[0, 0], cov[0, 1], cov[1, 0], cov[1, 1] = 1.0, 1.9, 1.9, 4.0  # Var(z1)=1, Cov=1.9, Var(z2)=4
    co = Coefficients(mean=torch.zeros(2, 3), cov=cov, a=torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    A, B, _ = quadratic_coefficients_k2(co)
    assert -B / (2 * A) > 1.0  # unconstrained vertex outside [0, 1]
    assert optimal_weights_k2(co).tolist() == [1.0, 0.0]
    assert _brute_force_k2(co)[0] == 1.0
    assert seen_interior > 0 and seen_boundary > 0  # both regimes exercised by the random sets


def test_k2_printed_formula_differs_from_eq9():
    """000's Eq. 10 as printed (A = Σa(b+c+d)) does not minimise Eq. 9 in general."""
    co = _random_coefficients(np.random.default_rng(3))
    assert quadratic_coefficients_k2(co, as_printed=True) != pytest.approx(quadratic_coefficients_k2(co))


def test_k2_degenerate_denominator():
    # identical members: b = d = c/2, so A = B = 0 and q is constant in w1 (zero denominator 2A)
    cov = torch.ones(2, 2, 3, dtype=torch.float64)
    co = Coefficients(mean=torch.zeros(2, 3), cov=cov, a=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    A, B, _ = quadratic_coefficients_k2(co)
    assert A == pytest.approx(0.0) and B == pytest.approx(0.0)
    w = optimal_weights_k2(co)
    assert w.sum().item() == pytest.approx(1.0)
    # zero variance everywhere: constant q, still a valid simplex point
    co0 = Coefficients(mean=torch.zeros(2, 3), cov=torch.zeros(2, 2, 3, dtype=torch.float64), a=co.a)
    assert optimal_weights_k2(co0).tolist() == [1.0, 0.0]  # Alg. 2's tie-break


# ------------------------------------------------------------------------------------ QP
def _generic_min(Q: np.ndarray, starts: int, rng: np.random.Generator) -> float:
    k = Q.shape[0]
    best = np.inf
    for _ in range(starts):
        res = minimize(
            lambda w: w @ Q @ w,
            rng.dirichlet(np.ones(k)),
            jac=lambda w: 2 * Q @ w,
            method="SLSQP",
            bounds=[(0, 1)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        best = min(best, float(res.x @ Q @ res.x))
    return best


@pytest.mark.parametrize("k", [3, 4, 6])
def test_qp_matches_generic_solver(k):
    rng = np.random.default_rng(k)
    for trial in range(6):
        g = rng.normal(size=(k, k if trial % 2 else k - 1))  # odd trials full rank, even singular
        Q = g @ g.T
        w = optimal_weights_qp(torch.from_numpy(Q)).numpy()
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
        assert float(w @ Q @ w) <= _generic_min(Q, 10, rng) + 1e-8


def test_qp_k3_against_simplex_grid():
    rng = np.random.default_rng(11)
    steps = 400
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    W = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], axis=1) / steps
    for _ in range(5):
        g = rng.normal(size=(3, 3))
        Q = g @ g.T
        lin = rng.normal(size=3)
        w = optimal_weights_qp(Q, lin).numpy()
        grid_min = np.min(np.einsum("nk,kl,nl->n", W, Q, W) + W @ lin)
        val = w @ Q @ w + lin @ w
        assert val <= grid_min + 1e-12
        assert val >= grid_min - 0.05  # grid is fine enough that it cannot be far above the optimum


def test_qp_with_k2_equals_closed_form():
    rng = np.random.default_rng(5)
    for _ in range(30):
        co = _random_coefficients(rng)
        w_qp = optimal_weights_qp(co)
        w_cf = optimal_weights_k2(co)
        assert objective(w_qp, co) == pytest.approx(objective(w_cf, co), rel=1e-10, abs=1e-12)
        assert torch.allclose(w_qp, w_cf, atol=1e-8)


# ------------------------------------------------------------------------------------ PerturbModel
def test_perturb_model_fraction_std_copy_and_seed():
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 40))  # 2040 parameter entries
    before = [p.detach().clone() for p in model.parameters()]
    t, std = 0.3, 0.01
    pert = perturb_model(model, t, std, torch.Generator().manual_seed(1))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # original untouched
    diff = torch.cat([(q - b).flatten() for q, b in zip(pert.parameters(), before)])
    changed = diff != 0
    total = diff.numel()
    lo, hi = binom.ppf(1e-6, total, t), binom.ppf(1 - 1e-6, total, t)
    assert lo <= int(changed.sum()) <= hi
    assert diff[changed].std().item() == pytest.approx(std, rel=0.1)
    assert diff[changed].mean().abs().item() < 5 * std / changed.sum().sqrt().item()
    again = perturb_model(model, t, std, torch.Generator().manual_seed(1))
    for p, q in zip(pert.parameters(), again.parameters()):
        assert torch.equal(p, q)
    other = perturb_model(model, t, std, torch.Generator().manual_seed(2))
    assert any(not torch.equal(p, q) for p, q in zip(pert.parameters(), other.parameters()))
    exact = perturb_model(model, t, std, torch.Generator().manual_seed(1), selection="exact")
    n_exact = sum(int((q != b).sum()) for q, b in zip(exact.parameters(), before))
    assert n_exact == int(t * total)


# ------------------------------------------------------------------------------------ estimation
def test_estimate_coefficients_shapes_and_definitions():
    members = [_tiny(seed=0), _tiny(seed=1)]
    x = torch.rand(6)
    co = estimate_coefficients(members, x, 1, 0.5, n=4, m=3, t=0.3, sigma_tilde=0.05,
                               generator=torch.Generator().manual_seed(0))
    assert co.cov.shape == (2, 2, 3) and co.mean.shape == (2, 3) and co.a.shape == (3,)
    assert co.a[1] == 0 and torch.all(co.a[[0, 2]] > 0)
    assert torch.allclose(co.a[[0, 2]], co.mean.min(0).values[[0, 2]].pow(-2))
    assert torch.allclose(co.cov[:, :, 1], torch.zeros(2, 2, dtype=co.cov.dtype))  # z_y ≡ 0
    assert torch.allclose(co.cov[0, 1], co.cov[1, 0])
    assert torch.all(co.b >= 0) and torch.all(co.d >= 0)
    # q from Eq. 9 with the paper's b, c, d equals wᵀQw
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    eq9 = (co.a * (co.b * 0.09 + co.c * 0.21 + co.d * 0.49)).sum().item()
    assert objective(w, co) == pytest.approx(eq9)
    # averaging two copies of the same coefficients leaves q unchanged
    assert objective(w, average_coefficients([co, co])) == pytest.approx(objective(w, co))


def test_shared_noise_identical_members_have_full_covariance():
    """With σ̃ = 0 every pseudo-model equals its member; two copies of one member see the same noisy
    inputs, so Cov(z^1, z^2) = Var(z^1) — fails if members got different noise."""
    member = _tiny(seed=3)
    co = estimate_coefficients([member, member], torch.rand(6), 0, 1.0, n=8, m=2, t=0.3, sigma_tilde=0.0,
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(co.cov[0, 1], co.cov[0, 0]) and torch.allclose(co.cov[1, 1], co.cov[0, 0])
    assert co.cov[0, 0, 1:].min() > 0


# ------------------------------------------------------------------------------------ protocols
def _protocol_setup():
    members = [_tiny(seed=0), _tiny(seed=1)]
    with torch.no_grad():  # make the members disagree in a class-dependent way
        members[1][1].weight.mul_(-3.0)
    return members, torch.rand(6)


def test_predicted_protocol_equals_paper_when_prediction_is_label():
    members, x = _protocol_setup()
    kw = dict(sigma=0.5, n=5, m=4, t=0.3, sigma_tilde=0.05)
    paper = esbrs_weights("paper", members, x, y_true=2, generator=torch.Generator().manual_seed(7), **kw)
    pred = esbrs_weights("predicted", members, x, selection_prediction=2, y_true=0,
                         generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(paper, pred)


def test_predicted_protocol_differs_when_prediction_differs():
    members, x = _protocol_setup()
    kw = dict(sigma=0.5, n=5, m=4, t=0.3, sigma_tilde=0.05)
    paper = esbrs_weights("paper", members, x, y_true=2, generator=torch.Generator().manual_seed(7), **kw)
    pred = esbrs_weights("predicted", members, x, y_true=2, selection_prediction=0,
                         generator=torch.Generator().manual_seed(7), **kw)
    assert not torch.allclose(paper, pred)
    with pytest.raises(ValueError):
        esbrs_weights("paper", members, x, generator=torch.Generator(), **kw)


def test_global_protocol_minimises_average_objective():
    members, _ = _protocol_setup()
    images = torch.rand(5, 6)
    labels = torch.tensor([0, 1, 2, 0, 1])
    kw = dict(sigma=0.5, n=4, m=3, t=0.3, sigma_tilde=0.05)
    w = esbrs_weights("global", members, heldout=(images, labels), generator=torch.Generator().manual_seed(1), **kw)
    assert w.shape == (2,) and w.sum().item() == pytest.approx(1.0) and torch.all(w >= 0)
    # independent of the query point: no x / y needed, same seed → same weights
    w2 = esbrs_weights("global", members, x=torch.rand(6), y_true=1, heldout=(images, labels),
                       generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(w, w2)
    # three members → QP path, still on the simplex
    members3 = members + [_tiny(seed=5)]
    w3 = esbrs_weights("global", members3, heldout=(images, labels), generator=torch.Generator().manual_seed(1), **kw)
    assert w3.shape == (3,) and w3.sum().item() == pytest.approx(1.0) and torch.all(w3 >= 0)


def test_solve_weights_k3_not_worse_than_uniform():
    rng = np.random.default_rng(2)
    co = _random_coefficients(rng, k=3)
    w = solve_weights(co)
    assert objective(w, co) <= objective(torch.full((3,), 1 / 3, dtype=torch.float64), co) + 1e-12


# ------------------------------------------------------------------------------------ SWEEN
class _ConstantWrong(nn.Module):
    """Always very confident in class 2."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 2] = 10.0
        return logits + 0 * self.dummy


def test_sween_prefers_good_member():
    torch.manual_seed(0)
    good = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        good[1].weight.zero_()
        good[1].weight[0, 0] = 8.0  # class 0 when feature 0 is large, class 1 otherwise
        good[1].weight[1, 0] = -8.0
        good[1].bias.zero_()
    images = torch.rand(60, 6)
    images[:, 0] = torch.where(torch.arange(60) % 2 == 0, 1.0, -1.0)
    labels = torch.where(torch.arange(60) % 2 == 0, 0, 1)
    w = sween_weights([_ConstantWrong(), good], images, labels, sigma=0.25, fit=SweenFit(crop_padding=0, flip=False),
                      generator=torch.Generator().manual_seed(0))
    assert w.sum().item() == pytest.approx(1.0) and torch.all(w >= 0)
    assert w[1].item() > 0.9


def test_sween_weights_follow_the_authors_loop_step_by_step():
    """Two epochs of SWEEN's weight fitting (SWEEN-author/SWEEN ens_train.py, training/ens.py)
    followed by hand: θ = 0; per epoch a permutation, per batch a crop (zero padding 1), a flip,
    one Gaussian draw per image, the batch-mean loss −log(Σ softmax(θ)_l p_l,y + 1e-10), and
    PyTorch's SGD with momentum 0.9 and weight decay 5e-4 on θ; lr 0.01, × 0.1 after 1 epoch."""
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(16, 3)) for _ in range(3)]
    images = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fit = SweenFit(epochs=2, batch_size=4, lr_milestones=(1,), crop_padding=1, flip=True)
    sigma = 0.5
    got = sween_weights(members, images, labels, sigma, fit, torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)  # the same draws, in the documented order
    theta, buf = np.zeros(3), None
    for epoch in range(2):
        lr = 0.01 * (0.1 if epoch >= 1 else 1.0)
        order = torch.randperm(10, generator=g)
        for start in range(0, 10, 4):
            batch = order[start:start + 4]
            b = len(batch)
            dy, dx = torch.randint(0, 3, (b,), generator=g), torch.randint(0, 3, (b,), generator=g)
            flips = torch.rand(b, generator=g) < 0.5
            x = torch.zeros(b, 1, 4, 4)
            for j, i in enumerate(batch.tolist()):
                padded = torch.zeros(1, 6, 6)
                padded[:, 1:5, 1:5] = images[i]
                crop = padded[:, dy[j]:dy[j] + 4, dx[j]:dx[j] + 4]
                x[j] = crop.flip(2) if flips[j] else crop
            x = x + sigma * torch.randn(x.shape, generator=g)
            with torch.no_grad():
                p_y = np.array([m(x).softmax(1)[torch.arange(b), labels[batch]].double().numpy() for m in members])
            w = np.exp(theta) / np.exp(theta).sum()
            mix = w @ p_y + 1e-10
            dl_dw = -(p_y / mix).mean(axis=1)  # ∂/∂w_l of −mean log(Σ w p_y + ε)
            grad = w * (dl_dw - w @ dl_dw)  # through w = softmax(θ)
            step = grad + 5e-4 * theta
            buf = step if buf is None else 0.9 * buf + step
            theta = theta - lr * buf
    expected = np.exp(theta) / np.exp(theta).sum()
    assert got.double().numpy() == pytest.approx(expected, abs=1e-6)
    assert np.abs(theta).max() > 1e-3  # the weights did move from uniform


def test_sween_loss_is_the_authors_objective():
    theta = torch.tensor([0.2, -0.1])
    probs = torch.tensor([[[0.7, 0.3], [0.0, 1.0]], [[0.5, 0.5], [0.0, 1.0]]])  # (k, B, c)
    labels = torch.tensor([0, 0])
    w = torch.softmax(theta, 0)
    by_hand = -(torch.log(w[0] * 0.7 + w[1] * 0.5 + 1e-10) + torch.log(torch.tensor(1e-10))) / 2
    assert sween_loss(theta, probs, labels).item() == pytest.approx(by_hand.item())
