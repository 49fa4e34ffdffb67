"""Argument and image checks of :class:`rslib.certification.smooth.Smooth`, one small function each.

Every bad argument raises a one-line ``ValueError`` that names it, shows the value and, where a
common mistake is likely, says how to fix it (``write 100_000, not 100000.0``, ``divide 0-255
images by 255``, ``pass one image, x[0], not a batch`` …). No check uses ``assert``, so all of
them also run under ``python -O``. Functions that check several arguments check them in the
order of the signature they serve and return them converted (``int``, ``float``).

Images must be floating-point tensors with finite values. For a model built by
:mod:`rslib.models` (its first layer is :class:`rslib.models.architectures.InputNormalization`,
which normalises) an image must be C×H×W with the model's C channels and [0, 1] pixels; for a
model of one's own, ``input_shape=(C, H, W)`` and ``pixel_range=(0.0, 1.0)`` give the same checks
(``pixel_range=None`` turns the range check off). A model carrying an ``rslib_spec`` with a
``sigma`` (its training σ) is refused at another σ unless ``allow_sigma_mismatch=True``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import torch

#: Explicit noise indices are dataset indices in ``[0, MAX_INDEX)``; ``Smooth``'s index-less calls
#: use negative stream positions of a separate stream, so the two never meet.
MAX_INDEX = 1 << 63


# -- single values -------------------------------------------------------------------------------


def integer(name: str, value: Any, minimum: int | None) -> int:
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


def noise_index(index: Any) -> int:
    """An image's dataset index, which addresses its noise stream: an integer in ``[0, 2**63)``."""
    index = integer("index", index, minimum=0)
    if index >= MAX_INDEX:
        raise ValueError(f"index must be < 2**63 (got {index})")
    return index


def failure_probability(alpha: Any) -> float:
    """α, the probability that PREDICT or CERTIFY errs: a real number in (0, 1), as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a number in (0, 1) (got {alpha!r})")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")
    return float(alpha)


def noise_level(sigma: Any) -> float:
    """σ, the standard deviation of the Gaussian noise: a positive finite real number, as a float."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(f"sigma must be a positive number (got {sigma!r})")
    if not math.isfinite(float(sigma)) or float(sigma) <= 0:
        raise ValueError(f"sigma must be positive and finite (got {sigma!r})")
    return float(sigma)


# -- the constructor ---------------------------------------------------------------------------


def smooth_arguments(
    base_classifier: Any, num_classes: Any, sigma: Any, noise_seed: Any, autocast_bf16: Any
) -> tuple[int, float, int]:
    """(num_classes, sigma, noise_seed) once ``base_classifier`` is a module, ``num_classes`` ≥ 2,
    ``sigma`` a noise level, ``noise_seed`` an integer and ``autocast_bf16`` a bool."""
    if not isinstance(base_classifier, torch.nn.Module):
        raise ValueError(f"base_classifier must be a torch.nn.Module (got {type(base_classifier).__name__})")
    num_classes = integer("num_classes", num_classes, minimum=2)
    sigma = noise_level(sigma)
    noise_seed = integer("noise_seed", noise_seed, minimum=None)
    if not isinstance(autocast_bf16, bool):
        raise ValueError(f"autocast_bf16 must be True or False (got {autocast_bf16!r})")
    return num_classes, sigma, noise_seed


def trained_sigma(model: torch.nn.Module, sigma: float, allow_sigma_mismatch: bool) -> None:
    """Refuse a model whose ``rslib_spec.sigma`` (the σ it was trained at, attached by
    ``load_model``) differs from ``sigma``, unless ``allow_sigma_mismatch``."""
    trained = getattr(getattr(model, "rslib_spec", None), "sigma", None)
    if (
        trained is not None
        and not allow_sigma_mismatch
        and not math.isclose(float(trained), sigma, rel_tol=0, abs_tol=1e-9)
    ):
        raise ValueError(
            f"the model was trained at sigma={float(trained):g} but Smooth uses sigma={sigma:g}: "
            "pass the model's sigma, or allow_sigma_mismatch=True to certify it at another noise level"
        )


def resolve_device(model: torch.nn.Module, device: Any) -> torch.device:
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


def channels_last(value: Any, device: torch.device) -> bool:
    """The ``channels_last`` option: ``value``, or on CUDA devices when ``None``."""
    if value is None:
        value = device.type == "cuda"
    if not isinstance(value, bool):
        raise ValueError(f"channels_last must be True, False or None (got {value!r})")
    return value


def input_domain(
    model: torch.nn.Module, input_shape: Sequence[int] | None, pixel_range: Any
) -> tuple[tuple[int, ...] | None, int | None, tuple[float, float] | None]:
    """(exact input shape or None, channel count or None, pixel range or None) for :func:`image`:
    the channels of an rslib model's :class:`~rslib.models.architectures.InputNormalization` and,
    with ``pixel_range="auto"``, [0, 1] pixels for such a model and no range check otherwise."""
    from rslib.models.architectures import InputNormalization

    first = next((m for m in model.modules() if isinstance(m, InputNormalization)), None)
    channels = int(first.mean.numel()) if first is not None else None
    if input_shape is not None:
        shape = tuple(integer("input_shape entries", s, minimum=1) for s in input_shape)
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


# -- calls: images, sample sizes, base-classifier outputs ----------------------------------------------


def image(
    x: Any,
    input_shape: tuple[int, ...] | None,
    channels: int | None,
    pixel_range: tuple[float, float] | None,
) -> torch.Tensor:
    """``x`` if it is one valid image for the domain of :func:`input_domain`, else a one-line ``ValueError``."""
    if not isinstance(x, torch.Tensor):
        hint = ": use torch.from_numpy(x)" if type(x).__module__ == "numpy" else ""
        raise ValueError(f"x must be a torch.Tensor (got {type(x).__module__}.{type(x).__name__}){hint}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor (got {x.dtype}): use x.float() / 255 for 0-255 images")
    shape = "×".join(map(str, x.shape)) or "a scalar"
    if input_shape is not None:
        if tuple(x.shape) != input_shape:
            raise ValueError(
                f"x must be one image of shape {'×'.join(map(str, input_shape))} (got {shape})"
                + _batch_hint(x, len(input_shape))
            )
    elif channels is not None:
        if x.dim() != 3 or x.shape[0] != channels:
            raise ValueError(
                f"x must be one image of shape {channels}×H×W, channels first (got {shape})" + _batch_hint(x, 3)
            )
    elif x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"x must be one input with at least one value (got {shape})")
    lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN and ±inf propagate
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("x contains NaN or infinite values")
    if pixel_range is not None:
        low, high = pixel_range
        if hi > high:
            hint = ": divide 0-255 images by 255" if hi > 1.5 and low == 0.0 and high == 1.0 else ""
            raise ValueError(f"pixels must be in [{low:g}, {high:g}] (got max {hi!r}){hint}")
        if lo < low:
            hint = (": pass unnormalised pixels, the model's first layer normalises"
                    if low == 0.0 and high == 1.0 else "")
            raise ValueError(f"pixels must be in [{low:g}, {high:g}] (got min {lo!r}){hint}")
    return x


def _batch_hint(x: torch.Tensor, dims: int) -> str:
    """The likely mistake behind a wrong image shape: a batch of one, or channels last."""
    if x.dim() == dims + 1 and x.shape[0] == 1:
        return ": pass one image, x[0], not a batch"
    if x.dim() == 3 and dims == 3 and x.shape[-1] in (1, 3) and x.shape[0] not in (1, 3):
        return ": channels last? use x.permute(2, 0, 1)"
    return ""


def certify_arguments(n0: Any, n: Any, alpha: Any, batch_size: Any) -> tuple[int, int, float, int]:
    """CERTIFY's (n0, n, alpha, batch_size): n0 ≥ 1 selection and n ≥ 1 estimation samples."""
    return (integer("n0", n0, minimum=1), integer("n", n, minimum=1), failure_probability(alpha),
            integer("batch_size", batch_size, minimum=1))


def predict_arguments(n: Any, alpha: Any, batch_size: Any) -> tuple[int, float, int]:
    """PREDICT's (n, alpha, batch_size): n ≥ 0 samples (0 abstains)."""
    return integer("n", n, minimum=0), failure_probability(alpha), integer("batch_size", batch_size, minimum=1)


def sample_arguments(num: Any, batch_size: Any, start: Any) -> tuple[int, int, int]:
    """``sample_counts``'s (num, batch_size, start): num ≥ 0 samples from sample ``start`` ≥ 0."""
    return (integer("num", num, minimum=0), integer("batch_size", batch_size, minimum=1),
            integer("start", start, minimum=0))


def base_outputs(logits: torch.Tensor, batch: int, num_classes: int) -> None:
    """The base classifier's outputs for a batch of ``batch`` inputs must be ``(batch, num_classes)`` logits."""
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"the base classifier returned outputs of shape {tuple(logits.shape)} for a batch of "
            f"{batch}, expected ({batch}, num_classes={num_classes})"
        )
