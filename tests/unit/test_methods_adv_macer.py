"""SmoothAdv, MACER and AdvMacer: noise-copy layout, the SmoothAdv attack, the MACER loss,
schedules, equivalences, training on digits and cost parity.

Expected values are computed independently here (numpy/scipy in float64 from the formulas of
the papers), never by calling the code under test a second way.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

import rslib.training.smoothadv as smoothadv_module
from rslib.training.attacks import smooth_adv_pgd, smoothed_nll, warmup_epsilon
from rslib.data.load import load_split
from rslib.data.prepare import prepare_dataset
from rslib.runtime.errors import ConfigError
from rslib.models.architectures import build_model
from rslib.training.advmacer import AdvMacer
from rslib.training.copies import copy_labels, mean_over_copies, noisy_copies
from rslib.training.loop import InMemoryBatches, OptimConfig, _step, train_loop
from rslib.training.macer import Macer, macer_loss
from rslib.training.smoothadv import SmoothAdv

torch.set_num_threads(1)


class Recorder(nn.Module):
    """Wraps a model; counts forward calls and rows, remembers the mode and last input."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.rows = 0
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += z.shape[0]
        self.modes.append(self.training)
        self.inputs.append(z.detach().clone())
        return self.inner(z)


def linear_model(weight: np.ndarray, bias: np.ndarray) -> nn.Module:
    """logits = W · flatten(x) + b."""
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), lin)


def hand_gradient(W, b, x, noise, sigma, y, m):
    """∇_δ of −log((1/m) Σ_k softmax(W z_k + b)_y) at δ = 0, z_k = x + σ n_k (float64).

    d/dz softmax(Wz+b)_y = s_y (W_y − Σ_j s_j W_j), so the gradient of the loss is
    −(1/(m p̄_y)) Σ_k s_{k,y} (W_y − s_k W)."""
    B = x.shape[0]
    xf = x.reshape(B, -1).astype(np.float64)
    nf = noise.reshape(B * m, -1).astype(np.float64)
    grads = np.zeros_like(xf)
    for i in range(B):
        s = []
        for k in range(m):
            z = xf[i] + sigma * nf[i * m + k]
            a = W @ z + b
            e = np.exp(a - a.max())
            s.append(e / e.sum())
        s = np.array(s)
        pbar = s[:, y[i]].mean()
        g = sum(s[k, y[i]] * (W[y[i]] - s[k] @ W) for k in range(m))
        grads[i] = -g / (m * pbar)
    return grads


# --------------------------------------------------------------------------- noise-copy layout


def test_noisy_copies_are_adjacent_repeat_interleave():
    x = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 3.0]]]])  # B=2, C=1, H=1, W=2
    noise = torch.arange(12, dtype=torch.float32).view(6, 1, 1, 2)  # m=3
    out = noisy_copies(x, 3, 0.5, noise)
    assert out.shape == (6, 1, 1, 2)
    for row in range(6):  # rows 0,1,2 are image 0; rows 3,4,5 image 1
        assert torch.equal(out[row], x[row // 3] + 0.5 * noise[row])
    assert torch.equal(out[1, 0, 0], torch.tensor([0.0 + 1.0, 1.0 + 1.5]))
    assert torch.equal(out[3, 0, 0], torch.tensor([2.0 + 3.0, 3.0 + 3.5]))
    assert copy_labels(torch.tensor([7, 9]), 3).tolist() == [7, 7, 7, 9, 9, 9]


def test_noisy_copies_draws_standard_normal_from_the_global_rng():
    x = torch.rand(3, 1, 2, 2)
    torch.manual_seed(11)
    out = noisy_copies(x, 2, 0.25)
    torch.manual_seed(11)
    expected = x.repeat_interleave(2, 0) + 0.25 * torch.randn(6, 1, 2, 2)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError):
        noisy_copies(x, 2, 0.25, torch.zeros(5, 1, 2, 2))


def test_mean_over_copies_averages_the_rows_of_one_image():
    # B=2 images, m=2 copies: rows (1, 3) belong to image 0 and (10, 30) to image 1.
    t = torch.tensor([[1.0, -1.0], [3.0, -3.0], [10.0, -10.0], [30.0, -30.0]])
    assert torch.equal(mean_over_copies(t, 2), torch.tensor([[2.0, -2.0], [20.0, -20.0]]))
    # The classic mistake, copies-major reshape: averages rows (1, 10) and (3, 30) instead.
    wrong = t.view(2, 2, 2).mean(0)
    assert not torch.allclose(wrong, mean_over_copies(t, 2))
    assert torch.equal(wrong, torch.tensor([[5.5, -5.5], [16.5, -16.5]]))
    with pytest.raises(ValueError):
        mean_over_copies(t[:3], 2)


@pytest.mark.parametrize("module", ["rslib.training.attacks", "rslib.training.copies", "rslib.training.advmacer"])
def test_modules_import_first_in_a_fresh_interpreter(module):
    # rslib.training.attacks <-> rslib.training (whose __init__ registers SmoothAdv/AdvMacer) must not
    # form an import cycle, whichever is imported first.
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- SmoothAdv attack

W3 = np.array([[0.8, -0.5, 0.3, 0.1], [-0.2, 0.6, -0.4, 0.9], [0.5, 0.2, 0.7, -0.6]])
B3 = np.array([0.1, -0.2, 0.05])


def test_attack_step_is_the_normalised_gradient_of_the_smoothed_nll():
    torch.manual_seed(0)
    m, sigma, eps = 3, 0.25, 0.1
    x = (0.3 + 0.4 * torch.rand(2, 1, 2, 2))  # far from 0 and 1: no clipping for a 2ε step
    y = torch.tensor([0, 2])
    noise = torch.randn(2 * m, 1, 2, 2)
    model = linear_model(W3, B3)
    x_adv = smooth_adv_pgd(model, x, y, noise, sigma, eps, steps=1)
    delta = (x_adv - x).reshape(2, -1).double().numpy()

    g = hand_gradient(W3, B3, x.numpy(), noise.numpy(), sigma, y.numpy(), m)
    ghat = g / np.linalg.norm(g, axis=1, keepdims=True)
    # one step of 2ε/T = 0.2 along ĝ (norm 2ε > ε), then projection back to norm ε: δ = ε ĝ
    np.testing.assert_allclose(delta, eps * ghat, atol=1e-6)
    assert np.all(np.linalg.norm(delta, axis=1) <= eps + 1e-6)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # T = 2: steps of ε along the normalised gradient; the first lands on the sphere (no
    # projection), the second starts from there with the gradient at x + δ₁
    x_adv2 = smooth_adv_pgd(model, x, y, noise, sigma, eps, steps=2)
    d1 = eps * ghat
    x1 = x.numpy().astype(np.float64) + d1.reshape(x.shape)
    g1 = hand_gradient(W3, B3, x1, noise.numpy(), sigma, y.numpy(), m)
    d2 = d1 + eps * g1 / np.linalg.norm(g1, axis=1, keepdims=True)
    d2 = d2 * np.minimum(1.0, eps / np.linalg.norm(d2, axis=1, keepdims=True))
    np.testing.assert_allclose((x_adv2 - x).reshape(2, -1).double().numpy(), d2, atol=1e-6)
    # it ascends −log p̄_y
    before = smoothed_nll(model(noisy_copies(x, m, sigma, noise)), y, m)
    after = smoothed_nll(model(noisy_copies(x_adv, m, sigma, noise)), y, m)
    assert torch.all(after > before)


def test_attack_clips_to_the_image_domain_then_projects():
    torch.manual_seed(1)
    m, sigma, eps = 2, 0.5, 0.3
    x = torch.tensor([[[[0.98, 0.02], [0.5, 0.99]]], [[[0.01, 0.97], [0.03, 0.5]]]])
    y = torch.tensor([1, 0])
    noise = torch.randn(2 * m, 1, 2, 2)
    x_adv = smooth_adv_pgd(linear_model(W3, B3), x, y, noise, sigma, eps, steps=1)

    xn = x.reshape(2, -1).double().numpy()
    g = hand_gradient(W3, B3, x.numpy(), noise.numpy(), sigma, y.numpy(), m)
    ghat = g / np.linalg.norm(g, axis=1, keepdims=True)
    stepped = xn + 2 * eps * ghat
    assert np.any((stepped > 1) | (stepped < 0)), "test case must exercise the [0, 1] clip"
    d = np.clip(stepped, 0, 1) - xn
    n = np.linalg.norm(d, axis=1, keepdims=True)
    expected = d * np.minimum(1.0, eps / n)
    delta = (x_adv - x).reshape(2, -1).double().numpy()
    np.testing.assert_allclose(delta, expected, atol=1e-6)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert np.all(np.linalg.norm(delta, axis=1) <= eps + 1e-6)


def test_zero_gradient_takes_a_random_unit_step():
    m, sigma, eps = 2, 0.25, 0.1
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.tensor([0, 1])
    noise = torch.randn(2 * m, 1, 2, 2)
    model = linear_model(np.zeros((3, 4)), B3)  # constant logits: the gradient is exactly 0
    torch.manual_seed(123)
    delta = smooth_adv_pgd(model, x, y, noise, sigma, eps, steps=1) - x
    torch.manual_seed(123)
    r = torch.randn(2, 1, 2, 2)
    u = r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(delta, eps * u, atol=1e-6)  # 2ε·u projected back to ε·u
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((2,), eps), atol=1e-6)


def test_projection_onto_the_epsilon_ball_after_three_steps():
    # Two classes: ∇ of −log p̄_0 is a positive multiple of (W_1 − W_0) at every point, so every
    # step goes along u = (W_1 − W_0)/‖W_1 − W_0‖. Three steps of 2ε/3 would reach 2ε.
    W = np.array([[0.3, -0.2, 0.1, 0.4], [-0.1, 0.2, 0.3, -0.2]])
    b = np.array([0.0, 0.1])
    u = (W[1] - W[0]) / np.linalg.norm(W[1] - W[0])
    m, sigma, eps = 2, 0.25, 0.2
    x = torch.full((1, 1, 2, 2), 0.5)
    torch.manual_seed(2)
    noise = torch.randn(m, 1, 2, 2)
    delta = (smooth_adv_pgd(linear_model(W, b), x, torch.tensor([0]), noise, sigma, eps, steps=3) - x)
    delta = delta.reshape(-1).double().numpy()
    assert abs(np.linalg.norm(delta) - eps) < 1e-6
    np.testing.assert_allclose(delta, eps * u, atol=1e-6)


def test_attack_restores_mode_and_flags_and_leaves_no_parameter_grads():
    torch.manual_seed(3)
    model = Recorder(linear_model(W3, B3))
    model.inner[1].bias.requires_grad_(False)
    x = torch.rand(2, 1, 2, 2)
    x_before = x.clone()
    noise = torch.randn(4, 1, 2, 2)
    model.train()
    smooth_adv_pgd(model, x, torch.tensor([0, 1]), noise, 0.25, 0.5, steps=2)
    assert model.modes == [False, False]  # attacked in eval mode
    assert model.training and model.inner.training  # train mode restored
    assert model.inner[1].weight.requires_grad and not model.inner[1].bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)
    model.eval()
    smooth_adv_pgd(model, x, torch.tensor([0, 1]), noise, 0.25, 0.5, steps=1)
    assert not model.training  # eval mode restored as eval


@pytest.mark.parametrize("eps,steps", [(0.0, 3), (0.5, 0)])
def test_attack_without_budget_returns_x_unchanged(eps, steps):
    model = Recorder(linear_model(W3, B3))
    x = torch.rand(2, 1, 2, 2)
    out = smooth_adv_pgd(model, x, torch.tensor([0, 1]), torch.randn(4, 1, 2, 2), 0.25, eps, steps)
    assert torch.equal(out, x) and model.calls == 0


# --------------------------------------------------------------------------- ε warm-up

ATTACK_HP = {"num_noise_vec": 2, "attack_steps": 1, "epsilon": 1.0}


def test_epsilon_warms_up_linearly_over_ten_epochs():
    expected = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0]
    for cls in (SmoothAdv, AdvMacer):
        method = cls(0.25, {**ATTACK_HP, "lbd": 12.0})
        assert [method.epsilon_at(e) for e in range(12)] == pytest.approx(expected)
    assert warmup_epsilon(0.5, 3, 0) == 0.5  # warm-up off
    with pytest.raises(ConfigError, match="epsilon"):
        SmoothAdv(0.25, {"num_noise_vec": 2, "attack_steps": 1})


@pytest.mark.parametrize("cls", [SmoothAdv, AdvMacer])
def test_methods_pass_the_warmed_up_epsilon_and_train_on_the_same_noise(cls, monkeypatch):
    seen = {}

    def fake_attack(model, x, y, noise, sigma, epsilon, steps):
        seen.update(noise=noise.clone(), epsilon=epsilon, steps=steps, training=model.training)
        return (x + 0.01).detach()

    monkeypatch.setattr(smoothadv_module, "smooth_adv_pgd", fake_attack)
    model = Recorder(linear_model(W3, B3))
    x, y = torch.rand(2, 1, 2, 2) * 0.9, torch.tensor([0, 2])
    method = cls(0.5, {**ATTACK_HP, "attack_steps": 3, "lbd": 4.0})
    torch.manual_seed(4)
    method.loss(model, x, y, epoch=2)
    assert seen["epsilon"] == pytest.approx(0.3) and seen["steps"] == 3
    assert model.calls == 1 and model.modes == [True]  # training forward in train mode
    expected_input = (x + 0.01).repeat_interleave(2, 0) + 0.5 * seen["noise"]
    assert torch.equal(model.inputs[0], expected_input)  # x_adv with the attack's noise


# --------------------------------------------------------------------------- MACER loss

# B=3 images, m=2 copies, 3 classes; rows (0, 1) image 0, (2, 3) image 1, (4, 5) image 2.
LOGITS = np.array(
    [
        [0.30, 0.10, 0.00], [0.25, 0.20, 0.05],  # image 0, label 0: correct, ξ < γ
        [1.00, 0.00, 0.50], [0.80, 0.10, 0.60],  # image 1, label 2: smoothed prediction 0
        [0.00, 10.0, 0.00], [0.00, 12.0, 1.00],  # image 2, label 1: β-softmax one-hot in fp32
    ]
)
LABELS = np.array([0, 2, 1])


def reference_macer(logits, y, m, sigma, gamma, beta, lbd):
    """Independent float64 MACER (``001`` Alg. 1 line 9) with scipy's Φ⁻¹."""
    B = len(y)

    def softmax(a):
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p = softmax(logits).reshape(B, m, -1).mean(1)
    cl = -np.mean(np.log(p[np.arange(B), y] + 1e-10))
    pb = softmax(beta * logits).reshape(B, m, -1).mean(1)
    hinge = 0.0
    for i in range(B):
        order = np.argsort(-pb[i])
        if order[0] != y[i]:
            continue
        xi = norm.ppf(pb[i, order[0]]) - norm.ppf(pb[i, order[1]])
        if np.isfinite(xi) and xi <= gamma:
            hinge += gamma - xi
    return cl, lbd * sigma / 2 * hinge / B


def test_macer_loss_matches_hand_computation():
    logits = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(LABELS)
    sigma, gamma, beta, lbd = 0.5, 8.0, 16.0, 12.0
    # the float32 β-softmax of image 2 is exactly one-hot, so its ξ is +inf
    p2 = F.softmax(beta * logits[4:6].detach(), dim=1).mean(0)
    assert p2[1] == 1.0 and p2[0] == 0.0 and p2[2] == 0.0

    total, cl, rl = macer_loss(logits, y, 2, sigma, gamma, beta, lbd)
    cl, rl = cl.detach(), rl.detach()
    exp_cl, exp_rl = reference_macer(LOGITS, LABELS, 2, sigma, gamma, beta, lbd)
    assert float(cl) == pytest.approx(exp_cl, abs=1e-5)
    assert float(rl) == pytest.approx(exp_rl, abs=1e-5)
    assert float(total.detach()) == pytest.approx(exp_cl + exp_rl, abs=1e-5)

    # only image 0 enters the hinge: pin ξ₀ and the division by the FULL batch (3, not 1)
    pb0 = np.exp(beta * LOGITS[:2]) / np.exp(beta * LOGITS[:2]).sum(1, keepdims=True)
    pb0 = pb0.mean(0)
    xi0 = norm.ppf(pb0[0]) - norm.ppf(pb0[1])
    assert 0 < xi0 < gamma
    assert float(rl) == pytest.approx(lbd * sigma / 2 * (gamma - xi0) / 3, abs=1e-5)

    # gradients stay finite although ξ of image 2 is infinite (dropped, not masked after Φ⁻¹)
    total.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[4:6].abs().max() < 1e-3  # image 2 only through its tiny CE term


def test_macer_drops_infinite_xi_instead_of_clamping_and_respects_the_hinge():
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    y = torch.tensor(LABELS)
    # with a huge γ a clamped (finite) ξ for image 2 would count; a dropped one does not
    _, _, rl = macer_loss(logits, y, 2, 0.5, 50.0, 16.0, 12.0)
    assert float(rl) == pytest.approx(reference_macer(LOGITS, LABELS, 2, 0.5, 50.0, 16.0, 12.0)[1], abs=1e-4)
    pb0 = np.exp(16 * LOGITS[:2]) / np.exp(16 * LOGITS[:2]).sum(1, keepdims=True)
    pb0 = pb0.mean(0)
    assert float(rl) == pytest.approx(12.0 * 0.25 * (50.0 - (norm.ppf(pb0[0]) - norm.ppf(pb0[1]))) / 3, abs=1e-4)
    # γ below ξ₀: the hinge is inactive for every image
    _, _, rl = macer_loss(logits, y, 2, 0.5, 1.0, 16.0, 12.0)
    assert float(rl) == 0.0
    # λ = 0: classification only
    total, cl, rl = macer_loss(logits, y, 2, 0.5, 8.0, 16.0, 0.0)
    assert float(rl) == 0.0 and torch.equal(total, cl)


def test_lambda_zero_until_first_lr_decay():
    hp = {"lbd": 12.0, "lbd_zero_until_first_decay": True, "lr_milestones": [200, 400]}
    method = Macer(1.0, hp)
    assert method.lbd_at(0) == 0.0 and method.lbd_at(199) == 0.0
    assert method.lbd_at(200) == 12.0 and method.lbd_at(439) == 12.0
    assert Macer(1.0, {"lbd": 12.0, "lr_milestones": [200, 400]}).lbd_at(0) == 12.0
    assert AdvMacer(1.0, {**ATTACK_HP, **hp}).lbd_at(199) == 0.0
    with pytest.raises(ConfigError, match="lr_milestones"):
        Macer(1.0, {"lbd": 12.0, "lbd_zero_until_first_decay": True})

    # the schedule reaches the loss: epoch 199 is pure classification, epoch 200 is not
    model = linear_model(0.3 * W3, B3)
    x, y = torch.rand(8, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    small = Macer(1.0, {**hp, "num_noise_vec": 4})
    losses = {}
    for epoch in (199, 200):
        torch.manual_seed(5)
        losses[epoch] = small.loss(model, x, y, epoch)[0]
        torch.manual_seed(5)
        logits = model(noisy_copies(x, 4, 1.0))
        _, cl, rl = macer_loss(logits, y, 4, 1.0, 8.0, 16.0, 12.0)
        assert float(rl.detach()) > 0
        expected = cl if epoch == 199 else cl + rl
        assert torch.allclose(losses[epoch], expected)


# --------------------------------------------------------------------------- method equivalences


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", 10, 1, (0.3053,), (0.3758,))


def digit_like_batch(n: int = 6):
    g = torch.Generator().manual_seed(7)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_advmacer_with_zero_epsilon_is_macer():
    x, y = digit_like_batch()
    hp = {"num_noise_vec": 3, "attack_steps": 2, "epsilon": 0.0, "lbd": 12.0}
    m1, m2 = small_cnn().train(), small_cnn().train()
    torch.manual_seed(9)
    macer = Macer(0.25, hp).loss(m1, x, y, epoch=20)[0]
    torch.manual_seed(9)
    adv = AdvMacer(0.25, hp).loss(m2, x, y, epoch=20)[0]
    assert torch.equal(macer, adv)
    torch.manual_seed(9)  # and ε > 0 changes it: the test can tell the attack is used
    adv_eps = AdvMacer(0.25, {**hp, "epsilon": 0.5}).loss(small_cnn().train(), x, y, epoch=20)[0]
    assert not torch.allclose(adv_eps, macer)


def test_advmacer_is_macer_loss_at_the_attack_point_with_the_attack_noise():
    x, y = digit_like_batch()
    hp = {"num_noise_vec": 3, "attack_steps": 2, "epsilon": 0.5, "warmup_epochs": 10, "lbd": 12.0}
    model = small_cnn().train()
    twin = copy.deepcopy(model)  # BN statistics move with every train-mode forward
    torch.manual_seed(12)
    got = AdvMacer(0.25, hp).loss(model, x, y, epoch=4)[0]
    torch.manual_seed(12)
    noise = torch.randn(18, 1, 8, 8)
    x_adv = smooth_adv_pgd(twin, x, y, noise, 0.25, 0.25, 2)  # ε warmed up: 0.5·5/10
    logits = twin(x_adv.repeat_interleave(3, 0) + 0.25 * noise)
    expected = macer_loss(logits, y, 3, 0.25, 8.0, 16.0, 12.0)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_smoothadv_loss_is_mean_cross_entropy_over_copies_of_the_attack_point():
    x, y = digit_like_batch()
    hp = {"num_noise_vec": 3, "attack_steps": 2, "epsilon": 0.5}
    model = small_cnn().train()
    twin = copy.deepcopy(model)
    torch.manual_seed(13)
    got = SmoothAdv(0.25, hp).loss(model, x, y, epoch=20)[0]
    torch.manual_seed(13)
    noise = torch.randn(18, 1, 8, 8)
    x_adv = smooth_adv_pgd(twin, x, y, noise, 0.25, 0.5, 2)
    logits = twin(x_adv.repeat_interleave(3, 0) + 0.25 * noise)
    per_copy = -F.log_softmax(logits, dim=1)[torch.arange(18), y.repeat_interleave(3)]
    assert torch.allclose(got, per_copy.mean(), atol=1e-6)
    soft = -torch.log(F.softmax(logits, 1).view(6, 3, 10).mean(1)[torch.arange(6), y]).mean()
    assert not torch.allclose(got, soft, atol=1e-4)  # not −log of the averaged softmax


# --------------------------------------------------------------------------- cost parity


def test_advmacer_costs_exactly_what_smoothadv_costs():
    x, y = digit_like_batch(4)
    hp = {"num_noise_vec": 3, "attack_steps": 2, "epsilon": 0.5, "lbd": 12.0}
    counts = {}
    for cls in (SmoothAdv, AdvMacer, Macer):
        model = Recorder(small_cnn()).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        torch.manual_seed(0)
        _step(cls(0.25, hp), model, optimizer, x, y, epoch=20)
        counts[cls.name] = (model.calls, model.rows)
    assert counts["smoothadv"] == counts["advmacer"] == (3, 3 * 4 * 3)  # (T + 1) passes on B·m rows
    assert counts["macer"] == (1, 4 * 3)


# --------------------------------------------------------------------------- training on digits


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory):
    meta = prepare_dataset("digits", tmp_path_factory.mktemp("data"))
    return load_split(meta, "train")


@pytest.mark.parametrize("cls", [SmoothAdv, Macer, AdvMacer])
def test_each_method_trains_on_digits(cls, digits_train, tmp_path):
    # λ = 1 rather than 12: with a large λ MACER's total loss *rises* at first because every
    # image that becomes correctly classified adds its hinge term — expected, but not a test.
    hp = {"num_noise_vec": 2, "attack_steps": 1, "epsilon": 0.5, "warmup_epochs": 2, "lbd": 1.0}
    model = small_cnn()
    optim = OptimConfig(epochs=3, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = InMemoryBatches(digits_train.images, digits_train.labels, 128, 0, torch.device("cpu"))
    state = train_loop(model, cls(0.25, hp), batches, optim, seed=0, checkpoint_dir=tmp_path,
                       run_key=cls.name, log=lambda _: None)
    losses = [h["loss"] for h in state.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] > losses[1] > losses[2], losses
    assert state.history[-1]["train_accuracy"] > 0.4  # chance is 0.1
