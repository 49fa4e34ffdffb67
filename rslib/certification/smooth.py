"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), with
Cohen, Rosenfeld & Kolter (2019)'s PREDICT and CERTIFY (their Sec. 3.2, Pseudocode).

This is the certifier used by ``000`` (Sec. 4, "Evaluation": CERTIFY with N0 = 100,
N = 100,000, α = 0.001) and by every baseline paper. The class keeps the familiar shape of
the reference ``Smooth`` (``predict``, ``certify``) and adds:

* noise from :class:`rslib.certification.noise.NoiseStream`, so sample k of image i in each phase is the
  same in every shard, rerun and ensemble member (pass the image's dataset ``index``);
* vectorised counting with ``torch.bincount`` on the device, one host sync per call;
* ``torch.inference_mode``, and on CUDA channels-last and optional bf16 autocast (the
  certificate then holds for the model as run, in bf16);
* fresh, independent noise for every call made without ``index`` (used as Cohen et al.'s
  ``Smooth`` is used, one ``certify`` call per image), see :class:`Smooth`;
* one-line ``ValueError`` for every bad argument (also under ``python -O``).

Smoothing convention (SPEC): noise is added to [0, 1] pixels and never clipped; the
model's first layer normalises. Radii are L2 distances in [0, 1]-pixel units.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from scipy.stats import beta, binomtest, norm

from rslib.certification.noise import NoiseStream, mix_seed, round_batch_size

#: Explicit noise indices are dataset indices in ``[0, MAX_INDEX)``; index-less calls use
#: negative stream positions of a separate stream (see :class:`Smooth`), so the two never meet.
MAX_INDEX = 1 << 63


_ANONYMOUS = 0x616E6F6E  # seed-stream tag of the index-less streams ("anon")


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - α) Clopper–Pearson lower bound on a binomial proportion.

    ``beta.ppf(α, n_a, n - n_a + 1)``; 0 when ``n_a = 0`` (the Beta quantile is undefined there).
    Equals ``proportion_confint(n_a, n, alpha=2α, method="beta")[0]`` used by Cohen et al.
    """
    if not 0 <= n_a <= n:
        raise ValueError(f"need 0 <= n_a <= n, got n_a={n_a}, n={n}")
    if n_a == 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """Radius σ·Φ⁻¹(p̲_A) of Cohen et al. Thm. 1 (with p̲_B = 1 − p̲_A); caller checks p̲_A ≥ 0.5."""
    return float(sigma * norm.ppf(p_a_lower))


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest radius CERTIFY can return with n samples (all n votes for the top class).

    At n = 100,000 and α = 0.001 this is ≈ 3.81σ.
    """
    return certified_radius(alpha ** (1.0 / n), sigma)


def certify_from_counts(selection: torch.Tensor, estimation: torch.Tensor, alpha: float, sigma: float) -> tuple[int, float]:
    """CERTIFY's decision from its class counts: the top selection class ĉ_A (ties → lowest
    class index, as in Cohen et al.'s code), the one-sided Clopper–Pearson bound p̲_A of its
    estimation count (n = the estimation total), and (ABSTAIN, 0.0) when p̲_A < ½, else
    (ĉ_A, σΦ⁻¹(p̲_A)). Shared by :meth:`Smooth.certify`, stored single-model counts and ensembles
    reduced from stored outputs, so all three certify identically."""
    c_a = int(selection.argmax())
    n = int(estimation.sum())
    p_a_lower = lower_confidence_bound(int(estimation[c_a]), n, alpha)
    if p_a_lower < 0.5:
        return Smooth.ABSTAIN, 0.0
    radius = certified_radius(p_a_lower, sigma)
    assert math.isfinite(radius)
    return c_a, radius


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


class Smooth:
    """A smoothed classifier around ``base_classifier`` at noise level ``sigma``.

    ``base_classifier`` maps a batch of [0, 1]-pixel images to logits over ``num_classes``.

    **Noise.** With ``index=i`` (the image's dataset index), :meth:`predict`, :meth:`certify`
    and :meth:`sample_counts` use the reproducible stream ``NoiseStream(noise_seed)`` of image
    ``i``: the same samples in every shard, rerun and ensemble member. Explicit indices must
    lie in ``[0, 2**63)``.

    Without ``index`` (the way Cohen et al.'s ``Smooth`` is called, ``certify(x, n0, n, alpha,
    batch_size)`` once per image) every call draws fresh noise, independent of every other
    call: call k of this object reads the stream at position ``-(k + 1)`` of a second stream
    seeded by ``mix_seed(noise_seed, tag, session)``. Negative positions are never valid
    explicit indices, and the seed differs, so an index-less call never reuses the samples of
    an explicit index (nor of an earlier index-less call). ``session`` is a 62-bit number
    drawn from torch's default generator at this object's first index-less call: separate
    ``Smooth`` objects (one per image, say) get separate sessions, and ``torch.manual_seed``
    makes index-less runs reproducible, as with Cohen et al.'s code. Calls with an index
    neither advance the counter nor touch torch's generator.

    **Checks.** Every argument is checked with a one-line ``ValueError``. Images must be
    floating-point tensors; for a model built by :mod:`rslib.models` (its first layer is
    :class:`rslib.models.architectures.InputNormalization`) an image must be C×H×W with the model's C
    channels and [0, 1] pixels. For a model of your own, pass ``input_shape=(C, H, W)`` and
    ``pixel_range=(0.0, 1.0)`` to get the same checks (``pixel_range=None`` turns the range
    check off). A model carrying an ``rslib_spec`` attribute with a ``sigma`` (its training
    σ) is refused at another σ unless ``allow_sigma_mismatch=True``.

    **Speed options.** ``autocast_bf16`` runs the model under bf16 autocast on CUDA (ignored on
    the CPU). ``channels_last`` (default: on CUDA) converts the model and every noisy batch to
    the channels-last memory format, which cuDNN's convolutions prefer; it changes only the
    layout, never the noise. ``benchmarks/device_check.py`` measures both.
    """

    #: Returned by ``predict`` and ``certify`` when the smoothed classifier abstains.
    ABSTAIN = -1

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        sigma: float,
        noise_seed: int = 0,
        device: torch.device | str | None = None,
        autocast_bf16: bool = False,
        *,
        input_shape: Sequence[int] | None = None,
        pixel_range: tuple[float, float] | None | str = "auto",
        allow_sigma_mismatch: bool = False,
        channels_last: bool | None = None,
    ):
        if not isinstance(base_classifier, torch.nn.Module):
            raise ValueError(
                f"base_classifier must be a torch.nn.Module (got {type(base_classifier).__name__})"
            )
        self.num_classes = _check_int("num_classes", num_classes, minimum=2)
        self.sigma = _check_sigma(sigma)
        noise_seed = _check_int("noise_seed", noise_seed, minimum=None)
        if not isinstance(autocast_bf16, bool):
            raise ValueError(f"autocast_bf16 must be True or False (got {autocast_bf16!r})")
        spec = getattr(base_classifier, "rslib_spec", None)
        trained_sigma = getattr(spec, "sigma", None)
        if (
            trained_sigma is not None
            and not allow_sigma_mismatch
            and not math.isclose(float(trained_sigma), self.sigma, rel_tol=0, abs_tol=1e-9)
        ):
            raise ValueError(
                f"the model was trained at sigma={float(trained_sigma):g} but Smooth uses sigma={self.sigma:g}: "
                "pass the model's sigma, or allow_sigma_mismatch=True to certify it at another noise level"
            )
        self.device = _resolve_device(base_classifier, device)
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True, False or None (got {channels_last!r})")
        self.channels_last = channels_last
        self.base_classifier = base_classifier.to(self.device).eval()
        if channels_last:
            self.base_classifier = self.base_classifier.to(memory_format=torch.channels_last)
        self.noise_seed = noise_seed
        self.noise = NoiseStream(noise_seed, self.device)
        self.autocast_bf16 = autocast_bf16 and self.device.type == "cuda"
        self.input_shape, self.input_channels, self.pixel_range = _input_domain(
            base_classifier, input_shape, pixel_range
        )
        self._anonymous: NoiseStream | None = None  # created at the first index-less call
        self._anonymous_calls = 0

    # -- checks and noise addressing --------------------------------------------------------------
    def check_image(self, x: Any) -> torch.Tensor:
        """``x`` if it is one valid image for this classifier, else a one-line ``ValueError``."""
        if not isinstance(x, torch.Tensor):
            hint = ": use torch.from_numpy(x)" if type(x).__module__ == "numpy" else ""
            raise ValueError(f"x must be a torch.Tensor (got {type(x).__module__}.{type(x).__name__}){hint}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor (got {x.dtype}): use x.float() / 255 for 0-255 images")
        shape = "×".join(map(str, x.shape)) or "a scalar"
        if self.input_shape is not None:
            if tuple(x.shape) != self.input_shape:
                raise ValueError(
                    f"x must be one image of shape {'×'.join(map(str, self.input_shape))} (got {shape})"
                    + _batch_hint(x, len(self.input_shape))
                )
        elif self.input_channels is not None:
            if x.dim() != 3 or x.shape[0] != self.input_channels:
                raise ValueError(
                    f"x must be one image of shape {self.input_channels}×H×W, channels first (got {shape})"
                    + _batch_hint(x, 3)
                )
        elif x.dim() == 0 or x.numel() == 0:
            raise ValueError(f"x must be one input with at least one value (got {shape})")
        lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN and ±inf propagate
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x contains NaN or infinite values")
        if self.pixel_range is not None:
            low, high = self.pixel_range
            if hi > high:
                hint = ": divide 0-255 images by 255" if hi > 1.5 and low == 0.0 and high == 1.0 else ""
                raise ValueError(f"pixels must be in [{low:g}, {high:g}] (got max {hi!r}){hint}")
            if lo < low:
                hint = (": pass unnormalised pixels, the model's first layer normalises"
                        if low == 0.0 and high == 1.0 else "")
                raise ValueError(f"pixels must be in [{low:g}, {high:g}] (got min {lo!r}){hint}")
        return x

    def _stream(self, index: int | None) -> tuple[NoiseStream, int]:
        """The noise stream and stream position of one call (see the class docstring)."""
        if index is not None:
            return self.noise, _check_index(index)
        if self._anonymous is None:
            session = int(torch.randint(0, 1 << 62, (), dtype=torch.int64))
            self._anonymous = NoiseStream(mix_seed(self.noise_seed, _ANONYMOUS, session), self.device)
        self._anonymous_calls += 1
        return self._anonymous, -self._anonymous_calls

    # -- sampling ---------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def _counts(
        self, x: torch.Tensor, num: int, batch_size: int, noise: NoiseStream, index: int, phase: str, start: int
    ) -> torch.Tensor:
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        for noisy in noisy_batches(x, num, batch_size, noise, self.sigma, index, phase, start, self.channels_last):
            with self._autocast():
                logits = self.base_classifier(noisy)
            if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                raise ValueError(
                    f"the base classifier returned outputs of shape {tuple(logits.shape)} for a batch of "
                    f"{len(noisy)}, expected ({len(noisy)}, num_classes={self.num_classes})"
                )
            counts += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu()

    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int,
        index: int | None = None,
        phase: str = "estimation",
        start: int = 0,
    ) -> torch.Tensor:
        """Class counts of f(x + ε) over noise samples ``start … start+num−1`` of ``phase`` for
        image ``index`` (``start`` a multiple of :data:`rslib.certification.noise.BLOCK`; staged sampling such as
        CertifyAdp continues a stream where the previous stage ended). Without ``index`` the
        samples are fresh (a new index-less stream position per call).

        Returns an int64 CPU tensor of length ``num_classes``.
        """
        self.check_image(x)
        num = _check_int("num", num, minimum=0)
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        start = _check_int("start", start, minimum=0)
        noise, position = self._stream(index)
        return self._counts(x, num, batch_size, noise, position, phase, start)

    # -- Cohen et al. PREDICT and CERTIFY ------------------------------------------------------
    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, index: int | None = None) -> int:
        """PREDICT: the top class, or ``ABSTAIN`` when a two-sided binomial test of the two
        largest counts has p-value > α (Cohen et al., Pseudocode; ``scipy.stats.binomtest``).
        The probability of returning a class other than g(x) is at most α.
        ``n = 0`` draws nothing and abstains. Without ``index`` the noise is fresh per call."""
        self.check_image(x)
        n = _check_int("n", n, minimum=0)
        alpha = _check_alpha(alpha)
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        noise, position = self._stream(index)
        counts = self._counts(x, n, batch_size, noise, position, "predict", 0)
        top2 = torch.topk(counts, 2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return self.ABSTAIN
        return int(top2.indices[0])

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, index: int | None = None
    ) -> tuple[int, float]:
        """CERTIFY: (class, L2 radius) or (``ABSTAIN``, 0.0).

        The top class is selected with ``n0`` samples; ``n`` *independent* samples then give
        the one-sided Clopper–Pearson lower bound p̲_A at level α. Abstain when p̲_A < 0.5,
        else return radius σ·Φ⁻¹(p̲_A). With probability ≥ 1 − α the returned class is g(x)
        and g is constant within the radius (Cohen et al. Prop. 2).

        With ``index`` the samples are image ``index``'s reproducible selection and estimation
        streams; without it they are fresh for every call (the guarantee then holds for every
        call independently of all other calls, as it needs to for a test set certified one
        image at a time).
        """
        self.check_image(x)
        n0 = _check_int("n0", n0, minimum=1)
        n = _check_int("n", n, minimum=1)
        alpha = _check_alpha(alpha)
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        noise, position = self._stream(index)
        selection = self._counts(x, n0, batch_size, noise, position, "selection", 0)
        estimation = self._counts(x, n, batch_size, noise, position, "estimation", 0)
        return certify_from_counts(selection, estimation, alpha, self.sigma)


# -- argument checks (one-line ValueErrors; no asserts, so they also run under python -O) ---------


def _check_int(name: str, value: Any, minimum: int | None) -> int:
    """``value`` as an int if it is an integer (not a bool, not a float) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.Tensor)):
        hint = ""
        if isinstance(value, float) and value.is_integer():
            hint = f": write {int(value):_}, not {value!r}"
        raise ValueError(f"{name} must be an integer (got {value!r} of type {type(value).__name__}){hint}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer (got {value!r})") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {number})")
    return number


def _check_index(index: Any) -> int:
    index = _check_int("index", index, minimum=0)
    if index >= MAX_INDEX:
        raise ValueError(f"index must be < 2**63 (got {index})")
    return index


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a number in (0, 1) (got {alpha!r})")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")
    return float(alpha)


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(f"sigma must be a positive number (got {sigma!r})")
    if not math.isfinite(float(sigma)) or float(sigma) <= 0:
        raise ValueError(f"sigma must be positive and finite (got {sigma!r})")
    return float(sigma)


def _resolve_device(model: torch.nn.Module, device: Any) -> torch.device:
    """``device`` if given, else where the model's parameters (or buffers) are, else the CPU."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0' (got {device!r}): "
                             f"{str(exc).splitlines()[0]}") from None
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _input_domain(
    model: torch.nn.Module, input_shape: Sequence[int] | None, pixel_range: Any
) -> tuple[tuple[int, ...] | None, int | None, tuple[float, float] | None]:
    """(exact input shape or None, channel count or None, pixel range or None) for the checks."""
    from rslib.models.architectures import InputNormalization

    first = next((m for m in model.modules() if isinstance(m, InputNormalization)), None)
    channels = int(first.mean.numel()) if first is not None else None
    if input_shape is not None:
        shape = tuple(_check_int("input_shape entries", s, minimum=1) for s in input_shape)
        if not shape:
            raise ValueError("input_shape must have at least one entry, e.g. (3, 32, 32)")
        if channels is not None and (len(shape) != 3 or shape[0] != channels):
            raise ValueError(f"input_shape {shape} does not fit the model's {channels}-channel input layer")
    else:
        shape = None
    if isinstance(pixel_range, str):
        if pixel_range != "auto":
            raise ValueError(f"pixel_range must be 'auto', None or (low, high) (got {pixel_range!r})")
        pixel_range = (0.0, 1.0) if first is not None else None
    elif pixel_range is not None:
        try:
            low, high = (float(v) for v in pixel_range)
        except (TypeError, ValueError):
            raise ValueError(f"pixel_range must be 'auto', None or (low, high) (got {pixel_range!r})") from None
        if not low < high:
            raise ValueError(f"pixel_range must have low < high (got {pixel_range!r})")
        pixel_range = (low, high)
    return shape, channels, pixel_range


def _batch_hint(x: torch.Tensor, dims: int) -> str:
    if x.dim() == dims + 1 and x.shape[0] == 1:
        return ": pass one image, x[0], not a batch"
    if x.dim() == 3 and dims == 3 and x.shape[-1] in (1, 3) and x.shape[0] not in (1, 3):
        return ": channels last? use x.permute(2, 0, 1)"
    return ""
