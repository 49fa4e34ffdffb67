"""Certification throughput: rslib's ``Smooth.sample_counts`` vs a plain Cohen-style reference
loop (noise drawn with ``torch.randn`` per batch, predictions copied to the host and counted in
a Python loop, as in Cohen et al.'s ``core.py``), measured in the same run on the same model.

    python benchmarks/certify_throughput.py                     # CIFAR ResNet-20 on the CPU
    python benchmarks/certify_throughput.py --arch resnet110 --device cuda --n 100000

Prints samples/s of each, their ratio, and the model's bare forward throughput (the floor:
certification cost ≈ forward cost is the goal). Timings are measured, never asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rslib.models import build_model
from rslib.smoothing import Smooth


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


def timed(fn, repeats):
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2000, help="noise samples per image")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for rslib (CUDA only)")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = build_model(args.arch, 10, 3, (0.5,) * 3, (0.25,) * 3).to(device).eval()
    x = torch.rand(3, 32, 32, device=device)
    smooth = Smooth(model, 10, 0.25, device=device, autocast_bf16=args.bf16)

    t_ref = timed(lambda: reference_counts(model, x, args.n, args.batch_size, 0.25, 10, device), args.repeats)
    t_rs = timed(lambda: smooth.sample_counts(x, args.n, args.batch_size, index=0, phase="estimation"), args.repeats)
    batch = torch.rand(args.batch_size, 3, 32, 32, device=device)

    def forward_only():
        with torch.inference_mode():
            for _ in range(0, args.n, args.batch_size):
                model(batch)

    t_fwd = timed(forward_only, args.repeats)
    print(f"{args.arch} on {device}, n={args.n}, batch={args.batch_size}")
    print(f"  forward only      {args.n / t_fwd:12.0f} samples/s")
    print(f"  reference (Cohen) {args.n / t_ref:12.0f} samples/s")
    print(f"  rslib Smooth      {args.n / t_rs:12.0f} samples/s")
    print(f"  speed-up rslib / reference: {t_ref / t_rs:.2f}x;  rslib cost / forward cost: {t_rs / t_fwd:.2f}")


if __name__ == "__main__":
    main()
