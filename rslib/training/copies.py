"""The one noise-copy layout used by every multi-noise method (SmoothAdv, MACER, AdvMacer).

A mini-batch of ``B`` images with ``m`` Gaussian draws each is a ``(B*m, C, H, W)`` tensor in
which **the m copies of one image are adjacent**: rows ``i*m … i*m + m − 1`` belong to image
``i``. This is ``x.repeat_interleave(m, 0)``, and it is also the layout of both reference
implementations (Salman et al., ``code/train_pgd.py`` and ``code/attacks.py``:
``inputs.repeat((1, m, 1, 1)).view(...)``; Zhai et al., ``macer.py``: the same
``repeat``/``view`` followed by ``reshape((B, m, classes))``).

Keeping a single layout matters because a mismatched reshape is silent: averaging
``(B*m, K)`` outputs with ``view(m, B, K).mean(0)`` instead of ``view(B, m, K).mean(1)`` mixes
rows of different images and still returns a tensor of the right shape. Every producer of
copies (:func:`noisy_copies`, :func:`copy_labels`) and every consumer
(:func:`mean_over_copies`) lives here so the two sides cannot drift apart.
"""

from __future__ import annotations

import torch


def draw_noise(x: torch.Tensor, m: int) -> torch.Tensor:
    """Standard normal draws for ``m`` copies of each image of ``x``: shape ``(B*m, C, H, W)``.

    Drawn with :func:`torch.randn` from the global generator, which the training loop seeds
    before every step, so a resumed run sees the same noise.
    """
    if m < 1:
        raise ValueError(f"need at least one noise copy per image, got m={m}")
    return torch.randn((x.shape[0] * m, *x.shape[1:]), device=x.device, dtype=x.dtype)


def noisy_copies(
    x: torch.Tensor, m: int, sigma: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """``x.repeat_interleave(m, 0) + sigma * noise``: m noisy copies per image, copies adjacent.

    ``noise`` is standard normal, shape ``(B*m, C, H, W)`` (drawn with :func:`draw_noise` when
    not given). The result is not clipped: the smoothing convention adds Gaussian noise to
    [0, 1] pixels and leaves normalisation to the model's first layer.
    """
    if noise is None:
        noise = draw_noise(x, m)
    expected = (x.shape[0] * m, *x.shape[1:])
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {expected} (B*m copies, adjacent)")
    return x.repeat_interleave(m, dim=0) + sigma * noise


def copy_labels(y: torch.Tensor, m: int) -> torch.Tensor:
    """Labels of the rows of :func:`noisy_copies`: each label repeated ``m`` times, adjacent."""
    return y.repeat_interleave(m, dim=0)


def split_copies(t: torch.Tensor, m: int) -> torch.Tensor:
    """``(B*m, ...)`` → ``(B, m, ...)``; row ``i`` of the result holds the copies of image ``i``."""
    if t.shape[0] % m:
        raise ValueError(f"{t.shape[0]} rows are not a whole number of groups of m={m} copies")
    return t.reshape(t.shape[0] // m, m, *t.shape[1:])


def mean_over_copies(t: torch.Tensor, m: int) -> torch.Tensor:
    """Average the ``m`` adjacent copies of each image: ``(B*m, ...)`` → ``(B, ...)``.

    This is the Monte Carlo estimate ẑ(x) = (1/m) Σ_k F(x + δ_k) of the soft smoothed
    classifier (``000`` Eq. 3; MACER ``001`` Sec. 4.5) when ``t`` holds per-copy softmax outputs.
    """
    return split_copies(t, m).mean(dim=1)
