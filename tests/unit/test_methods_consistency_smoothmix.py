"""Consistency regularization and SmoothMix: losses pinned to independent numpy computations,
the copy layout, the SmoothMix attack's step rule on a linear model, and short training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rslib.data.load import load_split
from rslib.data.prepare import prepare_dataset
from rslib.runtime.errors import ConfigError
from rslib.models.architectures import build_model
from rslib.training.consistency import Consistency, consistency_loss
from rslib.training.loop import InMemoryBatches, OptimConfig, train_loop
from rslib.training.smoothmix import SmoothMix, mix_inputs, mixed_targets, smoothmix_attack, smoothmix_loss

torch.set_num_threads(1)

# B=2 images, m=2 copies, K=3 classes; rows in the ADJACENT layout: img0 copy0, img0 copy1,
# img1 copy0, img1 copy1.
LOGITS = np.array([[2.0, 0.5, -1.0], [0.3, 1.2, 0.1], [-0.5, 0.0, 1.5], [1.0, -2.0, 0.7]])
LOGITS_MIX = np.array([[0.2, 0.1, 0.4], [1.5, -0.3, 0.0], [0.0, 2.0, -1.0], [-0.7, 0.3, 0.9]])
Y = np.array([0, 2])


# ---------------------------------------------------------------- numpy references


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_consistency(logits, y, m, lbd, eta, copy_major=False):
    """CE over all copies + mean_b[λ mean_i KL(avg‖p_i) + η H(avg)] (Jeong & Shin 2020)."""
    k = logits.shape[1]
    b = logits.shape[0] // m
    grouped = logits.reshape(m, b, k).transpose(1, 0, 2) if copy_major else logits.reshape(b, m, k)
    logp = np_log_softmax(grouped)
    ce = -np.mean([logp[i, j, y[i]] for i in range(b) for j in range(m)])
    avg = np.exp(logp).mean(1)
    kl = (avg[:, None, :] * (np.log(avg)[:, None, :] - logp)).sum(-1).mean(1)
    ent = -(avg * np.log(avg)).sum(-1)
    return ce + np.mean(lbd * kl + eta * ent)


def np_smoothmix(logits_c, logits_mix, y, lam, m, eta, copy_major=False):
    """CE(clean copies) + η mean_copies[1(argmax avg = y) KL((1-λ)avg + λu ‖ q)]."""
    k = logits_c.shape[1]
    b = logits_c.shape[0] // m

    def group(z):
        return z.reshape(m, b, k).transpose(1, 0, 2) if copy_major else z.reshape(b, m, k)

    logp, logq = np_log_softmax(group(logits_c)), np_log_softmax(group(logits_mix))
    ce = -np.mean([logp[i, j, y[i]] for i in range(b) for j in range(m)])
    avg = np.exp(logp).mean(1)
    target = (1 - lam)[:, None] * avg + lam[:, None] / k
    kl = (target[:, None, :] * (np.log(target)[:, None, :] - logq)).sum(-1)  # (b, m)
    mask = (avg.argmax(1) == y).astype(float)[:, None]
    return ce + eta * np.mean(mask * kl)


def numeric_grad(f, z, h=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        g[idx] = (f(zp) - f(zm)) / (2 * h)
    return g


def t64(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# ---------------------------------------------------------------- Consistency


def test_consistency_loss_matches_numpy_and_layout():
    got = consistency_loss(t64(LOGITS), torch.tensor(Y), 2, lbd=20.0, eta=0.5).item()
    want = np_consistency(LOGITS, Y, 2, 20.0, 0.5)
    wrong = np_consistency(LOGITS, Y, 2, 20.0, 0.5, copy_major=True)
    assert got == pytest.approx(want, rel=1e-12)
    assert abs(want - wrong) > 1e-2  # a copy-major grouping would be caught
    # each term is used: λ and η change the value as the formula says
    assert consistency_loss(t64(LOGITS), torch.tensor(Y), 2, 0.0, 0.0).item() == pytest.approx(
        np_consistency(LOGITS, Y, 2, 0.0, 0.0), rel=1e-12
    )
    assert consistency_loss(t64(LOGITS), torch.tensor(Y), 2, 3.0, 7.0).item() == pytest.approx(
        np_consistency(LOGITS, Y, 2, 3.0, 7.0), rel=1e-12
    )


def test_consistency_gradient_flows_through_the_average():
    """The reference keeps avg in the graph (no detach): compare autograd with finite
    differences of the numpy objective."""
    z = t64(LOGITS).requires_grad_(True)
    consistency_loss(z, torch.tensor(Y), 2, 20.0, 0.5).backward()
    want = numeric_grad(lambda a: np_consistency(a, Y, 2, 20.0, 0.5), LOGITS.copy())
    np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-5, atol=1e-7)


class MeanLogits(nn.Module):
    """Logits = W · (per-image pixel vector); deterministic, no BatchNorm."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.fc = nn.Linear(d, k).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.linspace(-1, 1, d * k, dtype=torch.float64).view(k, d) * 3)
            self.fc.bias.copy_(torch.arange(k, dtype=torch.float64) * 0.1)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_consistency_method_uses_adjacent_copies_and_defaults():
    model = MeanLogits(4, 3)
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    # σ = 0: all copies of an image are identical iff they are grouped correctly, so the
    # KL term vanishes and the loss is CE + η·H(p) of the clean logits
    method = Consistency(0.0, {"lbd": 20.0, "eta": 0.5, "num_noise_vec": 2})
    loss, logits = method.loss(model, x, y, 0)
    clean = model(x).detach().numpy()
    logp = np_log_softmax(clean)
    want = -logp[np.arange(3), y.numpy()].mean() + 0.5 * np.mean(-(np.exp(logp) * logp).sum(1))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert logits.shape == (3, 3)
    # λ defaults per σ from the CIFAR-10 runs; other σ need an explicit value
    assert [Consistency(s, {}).lbd for s in (0.25, 0.5, 1.0)] == [20.0, 10.0, 10.0]
    assert Consistency(0.12, {"lbd": 4}).lbd == 4.0
    assert Consistency(0.5, {}).m == 2 and Consistency(0.5, {}).eta == 0.5
    with pytest.raises(ConfigError):
        Consistency(0.12, {})


# ---------------------------------------------------------------- SmoothMix: loss and mixing


def test_mixing_and_soft_targets():
    x1 = torch.zeros(2, 1, 2, 2)
    x2 = torch.ones(2, 1, 2, 2) * torch.tensor([2.0, 4.0]).view(2, 1, 1, 1)
    lam = torch.tensor([0.25, 0.5])
    mixed = mix_inputs(x1, x2, lam)
    assert torch.allclose(mixed[0], torch.full((1, 2, 2), 0.5))
    assert torch.allclose(mixed[1], torch.full((1, 2, 2), 2.0))
    avg = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    target = mixed_targets(avg, lam)
    want = torch.tensor([[0.75 * 0.7 + 0.25 / 3, 0.75 * 0.2 + 0.25 / 3, 0.75 * 0.1 + 0.25 / 3],
                         [0.5 * 0.1 + 0.5 / 3, 0.5 * 0.1 + 0.5 / 3, 0.5 * 0.8 + 0.5 / 3]])
    assert torch.allclose(target, want)
    assert torch.allclose(target.sum(1), torch.ones(2))


def test_smoothmix_loss_matches_numpy_mask_and_layout():
    lam = np.array([0.1, 0.4])
    got = smoothmix_loss(t64(LOGITS), t64(LOGITS_MIX), torch.tensor(Y), t64(lam), 2, 5.0).item()
    want = np_smoothmix(LOGITS, LOGITS_MIX, Y, lam, 2, 5.0)
    assert got == pytest.approx(want, rel=1e-12)
    assert abs(want - np_smoothmix(LOGITS, LOGITS_MIX, Y, lam, 2, 5.0, copy_major=True)) > 1e-2
    # the mask: image 0's smoothed prediction is class 0 = its label, image 1's is class 2 = its
    # label; flipping image 1's label removes its mixup term (and changes its CE)
    y_wrong = np.array([0, 1])
    got_wrong = smoothmix_loss(t64(LOGITS), t64(LOGITS_MIX), torch.tensor(y_wrong), t64(lam), 2, 5.0).item()
    assert got_wrong == pytest.approx(np_smoothmix(LOGITS, LOGITS_MIX, y_wrong, lam, 2, 5.0), rel=1e-12)
    logp = np_log_softmax(LOGITS.reshape(2, 2, 3))
    ce_wrong = -np.mean([logp[i, j, y_wrong[i]] for i in range(2) for j in range(2)])
    avg = np.exp(logp).mean(1)
    t0 = (1 - lam[0]) * avg[0] + lam[0] / 3
    kl0 = (t0 * (np.log(t0) - np_log_softmax(LOGITS_MIX[:2]))).sum(1)
    assert got_wrong == pytest.approx(ce_wrong + 5.0 * kl0.sum() / 4, rel=1e-12)  # / B·m = 4


def test_smoothmix_gradient_flows_through_the_soft_target():
    lam = np.array([0.1, 0.4])
    zc, zm = t64(LOGITS).requires_grad_(True), t64(LOGITS_MIX).requires_grad_(True)
    smoothmix_loss(zc, zm, torch.tensor(Y), t64(lam), 2, 5.0).backward()
    gc = numeric_grad(lambda a: np_smoothmix(a, LOGITS_MIX, Y, lam, 2, 5.0), LOGITS.copy())
    gm = numeric_grad(lambda a: np_smoothmix(LOGITS, a, Y, lam, 2, 5.0), LOGITS_MIX.copy())
    np.testing.assert_allclose(zc.grad.numpy(), gc, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(zm.grad.numpy(), gm, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- SmoothMix: attack


class ModeRecorder(MeanLogits):
    def __init__(self, d, k):
        super().__init__(d, k)
        self.modes: list[tuple[bool, bool]] = []  # (training, weight.requires_grad) per call

    def forward(self, x):
        self.modes.append((self.training, self.fc.weight.requires_grad))
        return super().forward(x)


def np_attack(W, bvec, x, y, noise, sigma, alpha, steps, mix_step, maxnorm_s, maxnorm):
    """Independent SmoothMix attack on the linear model z = W(x + σδ) + b: ascend
    −log mean_j softmax(z_j)_y along the per-example L2-normalised gradient."""
    b, m = x.shape[0], noise.shape[0] // x.shape[0]
    xf, nf = x.reshape(b, -1), noise.reshape(b, m, -1)

    def project(v, r):
        v = v.copy()
        if r is not None:
            for i in range(b):
                d = v[i] - xf[i]
                n = np.linalg.norm(d)
                if n > r:
                    v[i] = xf[i] + d * r / (n + 1e-7)
        return np.clip(v, 0, 1)

    adv, init = xf.copy(), xf.copy()
    for t in range(steps):
        if t == mix_step:
            init = adv.copy()
        g = np.zeros_like(adv)
        for i in range(b):
            p = np.exp(np_log_softmax((adv[i] + sigma * nf[i]) @ W.T + bvec))  # (m, K)
            pbar = p[:, y[i]].mean()
            onehot = np.eye(W.shape[0])[y[i]]
            # d/dx of -log pbar = -(1/pbar) mean_j p_jy W^T (e_y - p_j)
            g[i] = -(1 / pbar) * np.mean([p[j, y[i]] * W.T @ (onehot - p[j]) for j in range(m)], axis=0)
        g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8)
        adv = project(adv + alpha * g, maxnorm)
    init = project(init, maxnorm_s)
    return init.reshape(x.shape), adv.reshape(x.shape)


@pytest.mark.parametrize("mix_step,maxnorm_s,maxnorm", [(1, 0.2, None), (0, None, 0.25), (2, None, None)])
def test_attack_step_rule_on_linear_model(mix_step, maxnorm_s, maxnorm):
    g = torch.Generator().manual_seed(1)
    model = ModeRecorder(4, 3)
    model.train()
    x = 0.2 + 0.6 * torch.rand(2, 1, 2, 2, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 2])
    noise = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=g)
    kw = dict(sigma=0.5, alpha=0.3, num_steps=3, mix_step=mix_step, maxnorm_s=maxnorm_s, maxnorm=maxnorm)
    init, adv = smoothmix_attack(model, x, y, noise, **kw)
    W, bvec = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    want_init, want_adv = np_attack(W, bvec, x.numpy(), y.numpy(), noise.numpy(),
                                    kw["sigma"], kw["alpha"], 3, mix_step,
                                    kw["alpha"] * mix_step if maxnorm_s is None else maxnorm_s, maxnorm)
    np.testing.assert_allclose(adv.numpy(), want_adv, atol=1e-10)
    np.testing.assert_allclose(init.numpy(), want_init, atol=1e-10)
    assert not np.allclose(want_adv, x.numpy())  # the attack moved
    if mix_step == 0:
        assert torch.equal(init, x)
    if maxnorm is not None:
        assert float((adv - x).flatten(1).norm(dim=1).max()) <= maxnorm + 1e-9
    # eval mode and frozen parameters during every attack forward (as the reference's
    # requires_grad_(model, False); model.eval()), train mode and trainable parameters afterwards
    assert model.modes == [(False, False)] * 3 and model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not adv.requires_grad and not init.requires_grad


def test_attack_leaves_batchnorm_and_grads_untouched():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, (0.3053,), (0.3758,))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    init, adv = smoothmix_attack(model, x, y, torch.randn(8, 1, 8, 8), sigma=0.25, alpha=0.5, num_steps=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert model.training and all(mod.training for mod in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert adv.min() >= 0 and adv.max() <= 1 and not torch.equal(adv, x)


# ---------------------------------------------------------------- SmoothMix: full step


def test_smoothmix_step_matches_numpy_with_fixed_noise_and_lambda():
    g = torch.Generator().manual_seed(2)
    model = MeanLogits(4, 3)
    x = 0.2 + 0.6 * torch.rand(2, 1, 2, 2, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 2])
    noise = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=g)
    lam = torch.tensor([0.15, 0.35], dtype=torch.float64)
    hp = {"num_noise_vec": 2, "num_steps": 3, "eta": 5.0, "alpha": 0.3, "mix_step": 1, "warmup": 4}
    method = SmoothMix(0.5, hp)
    loss, logits = method.step_loss(model, x, y, epoch=1, noise=noise, lam=lam)
    warm = 2 / 4  # min(1, (epoch + 1) / warmup)
    W, bvec = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    x0, xa = np_attack(W, bvec, x.numpy(), y.numpy(), noise.numpy(), 0.5, 0.3, 3, 1, warm * 0.3, None)
    xmix = (1 - lam.numpy())[:, None, None, None] * x0 + lam.numpy()[:, None, None, None] * xa
    copies = lambda v: (np.repeat(v, 2, 0) + 0.5 * noise.numpy()).reshape(4, -1)  # noqa: E731
    want = np_smoothmix(copies(x0) @ W.T + bvec, copies(xmix) @ W.T + bvec, y.numpy(), lam.numpy(), 2, 5.0 * warm)
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert logits.shape == (2, 3)
    # the one-step clean side was shrunk onto the warmed-up ball of radius 0.15
    assert float(np.linalg.norm((x0 - x.numpy()).reshape(2, -1), axis=1).max()) <= 0.15 + 1e-9
    # after the warm-up the full η is used
    assert method.warmup_factor(0) == 0.25 and method.warmup_factor(3) == 1.0 and method.warmup_factor(9) == 1.0


def test_smoothmix_draws_noise_and_lambda(monkeypatch):
    seen = {}

    def capture(self, model, x, y, epoch, noise, lam):
        seen.update(noise=noise, lam=lam)
        return torch.zeros(()), None

    monkeypatch.setattr(SmoothMix, "step_loss", capture)
    method = SmoothMix(0.5, {})
    x = torch.rand(2000, 1, 2, 2)
    method.loss(None, x, torch.zeros(2000, dtype=torch.long), 0)
    assert seen["noise"].shape == (4000, 1, 2, 2)
    assert float(seen["noise"].std()) == pytest.approx(1.0, abs=0.05)
    assert 0 <= float(seen["lam"].min()) < 0.01 and 0.49 < float(seen["lam"].max()) < 0.5
    # CIFAR-10 defaults
    assert (method.m, method.num_steps, method.eta, method.alpha, method.mix_step, method.warmup) == (2, 4, 5.0, 1.0, 0, 10)
    assert [SmoothMix(s, {}).alpha for s in (0.25, 0.5, 1.0)] == [0.5, 1.0, 2.0]
    assert method.maxnorm is None and method.maxnorm_s == 0.0
    assert SmoothMix(0.5, {"mix_step": 1}).maxnorm_s == 1.0
    with pytest.raises(ConfigError):
        SmoothMix(0.3, {})
    with pytest.raises(ConfigError):
        SmoothMix(0.5, {"mix_step": 4})


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    meta = prepare_dataset("digits", tmp_path_factory.mktemp("data") / "digits")
    return load_split(meta, "train")


@pytest.mark.parametrize(
    "method",
    [Consistency(0.25, {"num_noise_vec": 2, "lbd": 20.0, "eta": 0.5}),
     SmoothMix(0.25, {"num_noise_vec": 2, "num_steps": 2, "eta": 5.0, "alpha": 0.5, "warmup": 1})],
    ids=["consistency", "smoothmix"],
)
def test_three_epochs_on_digits_decrease_the_loss(method, digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, (0.3053,), (0.3758,))
    batches = InMemoryBatches(digits.images, digits.labels, 64, seed=0, device=torch.device("cpu"))
    state = train_loop(
        model, method, batches, OptimConfig(epochs=3, batch_size=64, lr=0.05), seed=0,
        checkpoint_dir=tmp_path, run_key=method.name, log=lambda msg: None,
    )
    losses = [h["loss"] for h in state.history]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[0] > losses[1] > losses[2], losses
    assert state.history[-1]["train_accuracy"] > 0.5
