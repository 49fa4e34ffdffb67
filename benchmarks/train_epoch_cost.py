"""Per-epoch training cost of every method, measured in one run on the same model and data,
printed as ratios to Gaussian training (the paper's claim: AdvMacer costs what SmoothAdv costs,
``000`` Sec. 3.1 "Discussion" (II) and Sec. 4).

Each method uses its own hyper-parameters from the configuration (m, T, batch size, ...) for the
chosen dataset and σ. Steps (``rslib.costs.measure.time_train_step``: the training loop's own step, at
the last epoch) are timed at ``batch_size × --batch-scale`` images on random inputs of the
dataset's shape; the epoch cost is projected as (seconds per step) × (steps per epoch at the
configured batch size) / batch-scale, i.e. assuming cost linear in the batch (state it when you
quote a projection measured with --batch-scale < 1). With a GPU, run it at --batch-scale 1:

    python benchmarks/train_epoch_cost.py                                    # CPU, ResNet-20, small batches
    python benchmarks/train_epoch_cost.py --arch resnet110 --device cuda --batch-scale 1 --sigma 0.50

Prints per method: seconds/step, projected seconds/epoch, ratio to Gaussian, and projected hours
for the configured number of epochs (compare Table 2's times, measured on a V100).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import yaml

from rslib.costs.measure import time_train_step
from rslib.data.registry import dataset_info
from rslib.experiment.config import configured_hparams
from rslib.training.driver import METHODS

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--sigma", default="0.25")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-scale", type=float, default=1 / 16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    sigma = f"{float(args.sigma):.2f}"
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    # Gaussian (Cohen et al.): one noisy copy, batch 256, the SmoothAdv schedule (150 epochs)
    gaussian = dict(configured_hparams(config, "smoothadv", args.dataset, sigma) or {}, epochs=150, batch_size=256)
    rows = []
    for name in METHODS:
        hparams = gaussian if name == "gaussian" else configured_hparams(config, name, args.dataset, sigma)
        if hparams is None:
            continue
        batch = max(1, round(int(hparams["batch_size"]) * args.batch_scale))
        # one step exactly as the training loop runs it (rslib.costs, also behind the GPU-hour estimate)
        per_step = time_train_step(args.dataset, args.arch, name, float(sigma), dict(hparams, batch_size=batch),
                                   device, steps=args.steps)
        steps_per_epoch = math.ceil(dataset_info(args.dataset).train_images / int(hparams["batch_size"]))
        per_epoch = per_step * steps_per_epoch / args.batch_scale
        rows.append((name, batch, per_step, per_epoch, int(hparams["epochs"])))
    base = next(r[3] for r in rows if r[0] == "gaussian")
    print(f"{args.arch} on {device}; {args.dataset} σ={sigma}; timed batches = configured × {args.batch_scale:g}")
    print(f"{'method':12s} {'batch':>6s} {'s/step':>9s} {'s/epoch':>10s} {'÷ gaussian':>11s} {'epochs':>7s} {'hours':>8s}")
    for name, batch, per_step, per_epoch, epochs in rows:
        print(f"{name:12s} {batch:6d} {per_step:9.3f} {per_epoch:10.1f} {per_epoch / base:11.2f} {epochs:7d} "
              f"{per_epoch * epochs / 3600:8.2f}")
    costs = {r[0]: r[3] for r in rows}
    if "advmacer" in costs and "smoothadv" in costs:
        print(f"AdvMacer / SmoothAdv epoch cost: {costs['advmacer'] / costs['smoothadv']:.3f}")


if __name__ == "__main__":
    main()
