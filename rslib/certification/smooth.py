"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), with
Cohen, Rosenfeld & Kolter (2019)'s PREDICT and CERTIFY (their Sec. 3.2, Pseudocode).

This is the certifier used by ``000`` (Sec. 4, "Evaluation": CERTIFY with N0 = 100,
N = 100,000, α = 0.001) and by every baseline paper. The class keeps the shape of the
reference ``Smooth`` (``predict``, ``certify``, ``_sample_noise``) and adds:

* noise from :class:`rslib.certification.noise.NoiseStream`, a pure function of (seed, image index,
  phase), so sample k of image i in each phase is the same in every shard, rerun and ensemble member
  (pass the image's dataset ``index``);
* vectorised counting with ``torch.bincount`` on the device, one host sync per call;
* ``torch.inference_mode``, and two speed options (``benchmarks/device_check.py`` measures
  both): ``channels_last`` (default: on CUDA) gives the model and every noisy batch the
  channels-last memory format, which cuDNN's convolutions prefer (only the layout changes,
  never the noise), and ``autocast_bf16`` runs the model under bf16 autocast on CUDA (ignored
  on the CPU; the certificate then holds for the model as run, in bf16);
* fresh, independent noise for every call made without ``index`` (used as Cohen et al.'s
  ``Smooth`` is used, one ``certify`` call per image), see "Noise" below;
* one-line ``ValueError`` for every bad argument (also under ``python -O``), from
  :mod:`rslib.certification.checks`.

Smoothing convention (SPEC): noise is added to [0, 1] pixels and never clipped; the
model's first layer normalises. Radii are L2 distances in [0, 1]-pixel units.

**Noise.** With ``index=i`` (the image's dataset index, in ``[0, 2**63)``), ``predict``,
``certify`` and ``sample_counts`` use the reproducible stream ``NoiseStream(noise_seed)`` of
image ``i``: the same samples in every shard, rerun and ensemble member. Without ``index`` (the
way Cohen et al.'s ``Smooth`` is called, ``certify(x, n0, n, alpha, batch_size)`` once per
image) every call draws fresh noise, independent of every other call: call k of a ``Smooth``
reads the stream at position ``-(k + 1)`` of a second stream seeded by
``mix_seed(noise_seed, tag, session)``. Negative positions are never valid explicit indices,
and the seed differs, so an index-less call never reuses the samples of an explicit index (nor
of an earlier index-less call). ``session`` is a 62-bit number drawn from torch's default
generator at the object's first index-less call: separate ``Smooth`` objects (one per image,
say) get separate sessions, and ``torch.manual_seed`` makes index-less runs reproducible, as
with Cohen et al.'s code. Calls with an index neither advance the counter nor touch torch's
generator.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from scipy.stats import binomtest

from rslib.certification import checks
from rslib.certification.bounds import certified_radius, lower_confidence_bound
from rslib.certification.noise import BLOCK, NoiseStream, mix_seed, round_batch_size
from rslib.runtime.devices import free_cached_memory, is_out_of_memory

_ANONYMOUS = 0x616E6F6E  # seed-stream tag of the index-less streams ("anon")


def certify_from_counts(
    selection: torch.Tensor, estimation: torch.Tensor, alpha: float, sigma: float
) -> tuple[int, float]:
    """CERTIFY's decision (Cohen et al. 2019, Sec. 3.2; Thm. 1) from its class counts: the top
    selection class ĉ_A (ties → lowest class index, as in Cohen et al.'s code), the one-sided
    Clopper–Pearson bound p̲_A of its estimation count n_A (n = the estimation total), and
    (ABSTAIN, 0.0) when p̲_A < ½, else (ĉ_A, σΦ⁻¹(p̲_A)). Shared by :meth:`Smooth.certify`,
    stored single-model counts and ensembles reduced from stored outputs, so all three certify
    identically."""
    c_a_hat = int(selection.argmax())
    n_a, n = int(estimation[c_a_hat]), int(estimation.sum())
    p_a_bar = lower_confidence_bound(n_a, n, alpha)
    if p_a_bar < 0.5:
        return Smooth.ABSTAIN, 0.0
    radius = certified_radius(p_a_bar, sigma)
    assert math.isfinite(radius)
    return c_a_hat, radius


class Smooth:
    """Cohen et al. (2019)'s smoothed classifier g around ``base_classifier`` f at noise level ``sigma``.

    f maps a batch of [0, 1]-pixel images to logits over ``num_classes``. :meth:`predict` and
    :meth:`certify` are the paper's PREDICT and CERTIFY, :meth:`sample_counts` its SAMPLEUNDERNOISE.
    ``index``, the image's dataset index, selects its reproducible noise (module docstring, "Noise").

    ``input_shape=(C, H, W)`` and ``pixel_range=(low, high)`` declare the input domain of a model of
    your own (an rslib model's is C×H×W with [0, 1] pixels; ``pixel_range=None``: no range check);
    ``allow_sigma_mismatch=True`` accepts a model trained at another σ (its ``rslib_spec.sigma``);
    ``channels_last`` (default: on CUDA) and ``autocast_bf16`` (CUDA only) are the speed options of the
    module docstring. Bad arguments raise one-line ``ValueError``s (:mod:`rslib.certification.checks`).
    A batch that runs out of device memory is halved and its samples drawn again, with one line to
    ``log`` (default: stderr); the certificate does not change (:meth:`_sample_noise`).
    """

    #: Returned by ``predict`` and ``certify`` when the smoothed classifier abstains.
    ABSTAIN = -1

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float, noise_seed: int = 0,
                 device: torch.device | str | None = None, autocast_bf16: bool = False, *,
                 input_shape: Sequence[int] | None = None, pixel_range: tuple[float, float] | None | str = "auto",
                 allow_sigma_mismatch: bool = False, channels_last: bool | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.num_classes, self.sigma, self.noise_seed = checks.smooth_arguments(
            base_classifier, num_classes, sigma, noise_seed, autocast_bf16)
        checks.trained_sigma(base_classifier, self.sigma, allow_sigma_mismatch)
        self.device = checks.resolve_device(base_classifier, device)
        self.channels_last = checks.channels_last(channels_last, self.device)
        self.base_classifier = base_classifier.to(self.device).eval()
        if self.channels_last:
            self.base_classifier = self.base_classifier.to(memory_format=torch.channels_last)
        self.noise = NoiseStream(self.noise_seed, self.device)
        self.autocast_bf16 = autocast_bf16 and self.device.type == "cuda"
        self.input_shape, self.input_channels, self.pixel_range = checks.input_domain(
            base_classifier, input_shape, pixel_range)
        self._anonymous: NoiseStream | None = None  # the index-less stream, made at the first index-less call
        self._anonymous_calls = 0
        self._batch_limit: int | None = None  # set by the out-of-memory back-off (_sample_noise)
        self.log = log if log is not None else _stderr_line

    @property
    def batch_limit(self) -> int | None:
        """The batch size the out-of-memory back-off settled on (None while no batch has failed):
        later calls use at most this many noisy samples per batch."""
        return self._batch_limit

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, index: int | None = None) -> int:
        """PREDICT (Cohen et al. 2019, Sec. 3.2): the top class ĉ_A of ``n`` samples, or ``ABSTAIN`` when
        the two-sided binomial test of its count n_A against n_A + n_B at ½ (``scipy.stats.binomtest``,
        n_B the runner-up's count) has p-value > α. The probability of returning a class other than
        g(x) is at most α. ``n = 0`` draws nothing and abstains."""
        x = self.check_image(x)
        n, alpha, batch_size = checks.predict_arguments(n, alpha, batch_size)
        noise, position = self._stream(index)
        counts = self._sample_noise(x, n, batch_size, noise, position, "predict")
        top2 = torch.topk(counts, 2)
        c_a_hat, n_a, n_b = int(top2.indices[0]), int(top2.values[0]), int(top2.values[1])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return self.ABSTAIN
        return c_a_hat

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                index: int | None = None) -> tuple[int, float]:
        """CERTIFY (Cohen et al. 2019, Sec. 3.2): (class, L2 radius) or (``ABSTAIN``, 0.0).

        ``n0`` selection samples pick the top class ĉ_A; ``n`` *independent* estimation samples give the
        one-sided Clopper–Pearson lower bound p̲_A at level α; abstain when p̲_A < 0.5, else return radius
        σ·Φ⁻¹(p̲_A) (:func:`certify_from_counts`). With probability ≥ 1 − α the class is g(x) and g is
        constant within the radius (Thm. 1, Prop. 2); without ``index`` this holds for every call
        independently of all others, as certifying a test set one image at a time requires.
        """
        x = self.check_image(x)
        n0, n, alpha, batch_size = checks.certify_arguments(n0, n, alpha, batch_size)
        noise, position = self._stream(index)
        counts_selection = self._sample_noise(x, n0, batch_size, noise, position, "selection")
        counts_estimation = self._sample_noise(x, n, batch_size, noise, position, "estimation")
        return certify_from_counts(counts_selection, counts_estimation, alpha, self.sigma)

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int, index: int | None = None,
                      phase: str = "estimation", start: int = 0) -> torch.Tensor:
        """Class counts (int64, CPU, length ``num_classes``) of f(x + ε) over samples ``start …
        start+num−1`` of ``phase`` of image ``index``. ``start``, a multiple of
        :data:`rslib.certification.noise.BLOCK`, continues a stream where an earlier stage ended
        (staged sampling such as CertifyAdp). Without ``index`` the samples are fresh."""
        x = self.check_image(x)
        num, batch_size, start = checks.sample_arguments(num, batch_size, start)
        noise, position = self._stream(index)
        return self._sample_noise(x, num, batch_size, noise, position, phase, start)

    @torch.inference_mode()
    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int, noise: NoiseStream, index: int,
                      phase: str, start: int = 0) -> torch.Tensor:
        """SAMPLEUNDERNOISE: f's top classes on the inputs of :func:`noisy_batches`, counted on the device.

        Out-of-memory back-off: when the device runs out of memory on a batch
        (:func:`rslib.runtime.devices.is_out_of_memory`: torch's ``OutOfMemoryError``, or cuDNN's
        and cuBLAS's allocation failures), the batch is halved (whole noise blocks, at least one), one
        line goes to ``self.log``, and sampling goes on from the first sample of that batch. The
        noise of a sample is fixed by its stream position, so the counts are those of a run at the
        smaller batch from the start (for a model that computes each input independently of the
        others in its batch, as in eval mode). The smaller batch stays for the later calls of this
        object. At one block (:data:`rslib.certification.noise.BLOCK` samples) the error is raised."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        done = 0
        while done < num:
            batch = round_batch_size(min(batch_size, self._batch_limit or batch_size))
            batches = noisy_batches(x, num - done, batch, noise, self.sigma, index, phase, start + done,
                                    self.channels_last)
            try:
                for noisy in batches:
                    counts += self._count(noisy)
                    done += len(noisy)
                return counts.cpu()  # the one host sync
            except Exception as error:
                if not is_out_of_memory(error) or batch <= BLOCK:
                    raise
                self._batch_limit = round_batch_size(batch // 2)
            finally:
                noisy = None
                batches.close()  # drops the batch buffer before the retry
            free_cached_memory(self.device)
            self.log(f"out of memory on {self.device} at {batch} noisy samples per batch: continuing with "
                     f"{self._batch_limit} (the same noise samples: the certificate does not change)")
        return counts.cpu()

    def _count(self, noisy: torch.Tensor) -> torch.Tensor:
        """Class counts of f's top classes on one batch, on the device."""
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.autocast_bf16 else nullcontext():
            logits = self.base_classifier(noisy)
        checks.base_outputs(logits, len(noisy), self.num_classes)
        return torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)

    def _stream(self, index: int | None) -> tuple[NoiseStream, int]:
        """The noise stream and stream position of one call (module docstring, "Noise")."""
        if index is not None:
            return self.noise, checks.noise_index(index)
        if self._anonymous is None:
            session = int(torch.randint(0, 1 << 62, (), dtype=torch.int64))
            self._anonymous = NoiseStream(mix_seed(self.noise_seed, _ANONYMOUS, session), self.device)
        self._anonymous_calls += 1
        return self._anonymous, -self._anonymous_calls

    def check_image(self, x: Any) -> torch.Tensor:
        """``x`` if it is one valid image for this classifier, else a one-line ``ValueError``."""
        return checks.image(x, self.input_shape, self.input_channels, self.pixel_range)


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def noisy_batches(
    x: torch.Tensor,
    num: int,
    batch_size: int,
    noise: NoiseStream,
    sigma: float,
    index: int,
    phase: str,
    start: int = 0,
    channels_last: bool | None = None,
) -> Iterator[torch.Tensor]:
    """The noisy inputs x + σ·ε for samples ``start … start+num−1`` of ``phase`` of image
    ``index``, in batches of whole noise blocks, on ``noise.device``.

    The one place where base-classifier inputs are built: CERTIFY, stored ensemble member
    outputs and the second certifiers all see exactly these samples.

    Every batch is built in one buffer allocated per call and overwritten by the next batch:
    consume a batch (run the model on it) before advancing the iterator, and ``clone`` it to
    keep it. The noise is drawn into the buffer and scaled and shifted in place, the same
    float32 operations, so the same values, as ``x + sigma * noise`` (IEEE addition
    commutes); this saves an allocation, a copy and two passes over memory per batch
    (``benchmarks/certify_throughput.py``, 2 CPU cores, ResNet-20: CERTIFY costs 1.00-1.03× the
    bare forward pass of the same samples, the previous loop 1.03×). ``channels_last`` (default: on CUDA) hands the
    model a channels-last copy of each batch; the noise itself is always drawn in the
    contiguous layout, so its values do not depend on the memory format.
    """
    x = x.to(noise.device, non_blocking=True)
    if channels_last is None:
        channels_last = noise.device.type == "cuda"
    channels_last = channels_last and x.dim() == 3
    batch = round_batch_size(batch_size)
    buffer = torch.empty((min(batch, num), *x.shape), device=noise.device, dtype=noise.dtype)
    converted = torch.empty_like(buffer, memory_format=torch.channels_last) if channels_last else None
    for offset in range(0, num, batch):
        size = min(batch, num - offset)
        noisy = noise.sample(index, phase, start + offset, size, x.shape, out=buffer[:size])
        noisy.mul_(sigma).add_(x)
        if converted is not None:
            noisy = converted[:size].copy_(noisy)
        yield noisy
