"""SmoothAdv's attack: L2 PGD on the smoothed soft classifier (Salman et al. 2019).

Salman et al. attack the *smoothed* classifier G(x) = E_δ[F(x + δ)] (F = softmax of the base
model) rather than the base model. With m fixed noise draws δ_1 … δ_m per image the objective is

    ℓ(x') = −log( (1/m) Σ_k F(x' + δ_k)_y ),                     (``000`` Sec. 3.1, Eq. 1 and 3)

maximised over ‖x' − x‖₂ ≤ ε by T steps of normalised-gradient ascent, each of length 2ε/T,
each followed by clipping to the image domain [0, 1] and projection onto the ε-ball. AdvMacer
(``000`` Sec. 3.1, App. A Alg. 1 step 2) reuses it unchanged.

Facts taken from the reference implementation (github.com/Hadisalman/smoothing-adversarial,
``code/attacks.py``, ``PGD_L2._attack_mutlinoise``; our code is written independently):

* zero start (δ = 0), SGD on δ with learning rate ``2 * max_norm / steps``;
* the mean softmax over the m draws is clamped at 1e-20 before the log;
* the gradient is L2-normalised per example; an example whose gradient is exactly zero gets
  a random direction instead (the reference uses an *unnormalised* ``randn_like`` there, so its
  step is ~sqrt(d) times too long before the projection cuts it back; we normalise it, so every
  step has length 2ε/T as specified);
* after each step x + δ is clamped to [0, 1], then δ is projected onto the ε-ball
  (``renorm_(p=2, dim=0, maxnorm=ε)``; we scale by ε/‖δ‖ exactly, without renorm's 1e-7 slack);
* the caller (``code/train_pgd.py``) puts the model in eval mode and switches parameter
  ``requires_grad`` off during the attack, then restores train mode — done here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The copy-layout helpers live in rslib.training.copies. They are imported inside the functions
# below, not here: importing anything under rslib.training runs rslib/training/__init__.py, which
# registers SmoothAdv/AdvMacer, which import this module — a cycle when rslib.training.attacks is the
# first module imported.


def smoothed_nll(logits: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """Per-image −log(clamp((1/m) Σ_k softmax(logits_k), min=1e-20))_y for ``(B*m, K)`` logits.

    The cross-entropy of the Monte Carlo soft smoothed classifier (``000`` Eq. 3), i.e. the
    quantity SmoothAdv's attack ascends. The clamp (reference: ``average_softmax.clamp(min=1e-20)``)
    keeps the log finite when every draw gives the label probability 0 in float32.
    """
    from rslib.training.copies import mean_over_copies

    probs = mean_over_copies(F.softmax(logits, dim=1), m)
    return -torch.log(probs.clamp(min=1e-20)).gather(1, y[:, None]).squeeze(1)


def warmup_epsilon(epsilon: float, epoch: int, warmup_epochs: int) -> float:
    """ε used in (0-based) ``epoch``: min(ε, ε·(epoch + 1)/warmup_epochs).

    Linear warm-up from the reference ``code/train_pgd.py``:
    ``attacker.max_norm = np.min([args.epsilon, (epoch + 1) * args.epsilon / args.warmup])`` with
    ``--warmup 10`` in every published command (README and ``jobs.yaml``). ``warmup_epochs <= 0``
    disables it.
    """
    if warmup_epochs <= 0:
        return float(epsilon)
    return float(min(epsilon, epsilon * (epoch + 1) / warmup_epochs))


def project_l2(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Project each example of ``delta`` onto the L2 ball of radius ``epsilon`` (no-op inside)."""
    norms = delta.flatten(1).norm(p=2, dim=1)
    # ε/‖δ‖ where the ball is left, 1 elsewhere; the clamp only guards the 0/0 of δ = 0.
    scale = torch.where(norms > epsilon, epsilon / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def _unit_directions(grad: torch.Tensor) -> torch.Tensor:
    """Per-example L2-normalised gradient; a random unit direction where the gradient is zero
    (e.g. a saturated softmax), so that every example still moves by the full step."""
    norms = grad.flatten(1).norm(p=2, dim=1)
    zero = norms == 0
    direction = grad / norms.clamp_min(1e-30).view(-1, *([1] * (grad.dim() - 1)))
    if bool(zero.any()):
        # torch.randn: the training loop seeds the global generator before each step.
        rnd = torch.randn_like(grad[zero])
        direction[zero] = rnd / rnd.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (grad.dim() - 1)))
    return direction


def smooth_adv_pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: torch.Tensor,
    sigma: float,
    epsilon: float,
    steps: int,
) -> torch.Tensor:
    """SmoothAdv_PGD (Salman et al. 2019, Sec. 3 / App.; ``000`` Sec. 3.1): adversarial ``x + δ``.

    Args:
        model: base classifier returning logits; run in eval mode here, its mode restored after.
        x: clean images ``(B, C, H, W)`` in [0, 1].
        y: labels ``(B,)``.
        noise: *standard normal* draws ``(B*m, C, H, W)`` in the copies-adjacent layout of
            :mod:`rslib.training.copies`; the model sees ``x + δ + sigma * noise``. The same draws
            are used in every step (and, by the training methods, in the training loss).
        sigma: noise level σ.
        epsilon: L2 radius ε in [0, 1]-pixel units (not the 1/256 units of the reference's
            command line).
        steps: number of PGD steps T; each has length 2ε/T.

    Returns:
        ``(x + δ).detach()`` with ‖δ‖₂ ≤ ε per image and x + δ in [0, 1]; ``x`` itself (detached)
        when ``epsilon == 0`` or ``steps == 0``.

    Gradients are taken with respect to δ only (``torch.autograd.grad``), with parameter
    ``requires_grad`` switched off meanwhile (as the reference's ``requires_grad_(model, False)``):
    no parameter ``.grad`` is touched and the backward pass skips weight gradients.
    """
    from rslib.training.copies import noisy_copies

    x = x.detach()
    if epsilon <= 0 or steps <= 0:
        return x
    if noise.shape[0] % x.shape[0]:
        raise ValueError(f"noise has {noise.shape[0]} rows, not a multiple of the batch size {x.shape[0]}")
    m = noise.shape[0] // x.shape[0]
    noise = noise.detach()
    step_size = 2.0 * epsilon / steps

    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        model.eval()  # attack the classifier that will be certified: BN running statistics, no update
        for p in params:
            p.requires_grad_(False)
        delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model(noisy_copies(x + delta, m, sigma, noise))
            # Sum over images: the per-example normalisation below makes the scale irrelevant.
            loss = smoothed_nll(logits, y, m).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                # Ascend ℓ: the reference minimises −ℓ with SGD, i.e. δ ← δ + lr · ∇ℓ/‖∇ℓ‖.
                delta = delta.detach() + step_size * _unit_directions(grad)
                delta = (x + delta).clamp_(0.0, 1.0) - x  # stay in the image domain
                delta = project_l2(delta, epsilon)  # scaling toward 0 keeps x + δ in [0, 1]
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return (x + delta).detach()
