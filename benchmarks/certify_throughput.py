"""Certification throughput: rslib's ``Smooth.sample_counts`` vs a plain Cohen-style reference
loop (noise drawn with ``torch.randn`` per batch, predictions copied to the host and counted in
a Python loop, as in Cohen et al.'s ``core.py``) vs the model's bare forward pass over the same
number of samples (the floor), measured in the same run on the same model.

    python benchmarks/certify_throughput.py                     # CIFAR ResNet-20 on the CPU
    python benchmarks/certify_throughput.py --arch resnet110 --device cuda --n 100000

The variants are interleaved: each round times every variant once, in a rotating order, so
that a slow spell of a shared machine hits all of them alike. Reported are medians over the
rounds with their range, and the median over rounds of each round's cost ratio (rslib /
forward, rslib / reference). Timings are measured, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from rslib.certification.smooth import Smooth
from rslib.models.architectures import build_model
from rslib.runtime.devices import synchronize


def reference_counts(model, x, num, batch_size, sigma, num_classes, device):
    """Cohen et al.'s _sample_noise: per-batch noise, host copy, Python counting loop."""
    counts = np.zeros(num_classes, dtype=int)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            size = min(batch_size, remaining)
            remaining -= size
            batch = x.repeat((size, 1, 1, 1))
            noise = torch.randn_like(batch, device=device) * sigma
            predictions = model(batch + noise).argmax(1)
            for idx in predictions.cpu().numpy():
                counts[idx] += 1
    return counts


def forward_only(model, batch: torch.Tensor, num: int, autocast_bf16: bool = False) -> None:
    """The bare forward passes of ``num`` samples in batches of ``len(batch)`` (the floor)."""
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast_bf16 else nullcontext()
    with torch.inference_mode(), context:
        for start in range(0, num, len(batch)):
            model(batch[: min(len(batch), num - start)])


def interleaved_seconds(
    variants: dict[str, Callable[[], object]], rounds: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of every variant in each of ``rounds`` rounds, after ``warmup`` untimed calls
    of each. Round r runs the variants in the order rotated by r, so none always goes first."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            synchronize(device)
            started = time.perf_counter()
            variants[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """(median, min, max) over rounds of the per-round ratio numerator / denominator."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), min(ratios), max(ratios)


def summarize(seconds: dict[str, list[float]], samples: int) -> dict[str, dict[str, float]]:
    """Per variant: median samples/s over rounds and the range (slowest, fastest round)."""
    return {
        name: {"samples_per_s": samples / statistics.median(t), "slowest": samples / max(t), "fastest": samples / min(t),
               "rounds": len(t)}
        for name, t in seconds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2000, help="noise samples per image")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (medians are reported)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for rslib and the forward floor (CUDA only)")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 10, 3, (0.5,) * 3, (0.25,) * 3).to(device).eval()
    x = torch.rand(3, 32, 32, device=device)
    smooth = Smooth(model, 10, 0.25, device=device, autocast_bf16=args.bf16)  # channels-last on CUDA
    batch = torch.rand(args.batch_size, 3, 32, 32, device=device)
    if smooth.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    calls = iter(range(1 << 62))  # a fresh image index per call, as when certifying a test set
    variants = {
        "forward only": lambda: forward_only(smooth.base_classifier, batch, args.n, smooth.autocast_bf16),
        "reference (Cohen)": lambda: reference_counts(smooth.base_classifier, x, args.n, args.batch_size, 0.25, 10, device),
        "rslib Smooth": lambda: smooth.sample_counts(x, args.n, args.batch_size, index=next(calls)),
    }
    seconds = interleaved_seconds(variants, args.rounds, device)
    rates = summarize(seconds, args.n)
    print(f"{args.arch} on {device} ({torch.get_num_threads()} threads), n={args.n}, batch={args.batch_size}, "
          f"{args.rounds} interleaved rounds: median samples/s (slowest-fastest round)")
    for name, rate in rates.items():
        print(f"  {name:18s} {rate['samples_per_s']:12.0f}   ({rate['slowest']:.0f}-{rate['fastest']:.0f})")
    cost, low, high = median_ratio(seconds["rslib Smooth"], seconds["forward only"])
    speed, slow, fast = median_ratio(seconds["reference (Cohen)"], seconds["rslib Smooth"])
    print(f"  rslib cost / forward cost: {cost:.3f} (rounds {low:.3f}-{high:.3f})")
    print(f"  speed-up rslib / reference: {speed:.2f}x (rounds {slow:.2f}-{fast:.2f})")


if __name__ == "__main__":
    main()
