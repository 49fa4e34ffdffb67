"""Per-epoch training cost of every method, measured in one run on the same model and data,
printed as ratios to Gaussian training (the paper's claim: AdvMacer costs what SmoothAdv costs,
``000`` Sec. 3.1 "Discussion" (II) and Sec. 4).

Each method uses its own hyper-parameters from the configuration (m, T, batch size, ...) for the
chosen dataset and σ. Steps are timed at ``batch_size × --batch-scale`` images on random
CIFAR-sized inputs; the epoch cost is projected as (seconds per step) × (steps per epoch at the
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
import time
from pathlib import Path

import torch
import yaml

from rslib.models import build_model
from rslib.training import METHODS
from rslib.training.loop import OptimConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZE = {"cifar10": 50_000, "svhn": 73_257, "digits": 1_297}


def method_hparams(config: dict, method: str, dataset: str, sigma: str) -> dict | None:
    settings = config["methods"].get(method, {}).get(dataset)
    if settings is None:
        return None
    hparams = dict(settings["hparams"])
    for key, override in settings.get("by_sigma", {}).items():
        if f"{float(key):.2f}" == sigma:
            hparams.update(override)
    return hparams


def time_steps(method_name: str, hparams: dict, sigma: float, arch: str, batch: int, steps: int, device) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 10, 3, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2)).to(device).train()
    method = METHODS[method_name](sigma, hparams)
    optim = OptimConfig.from_hparams(hparams)
    optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    epoch = int(hparams.get("warmup_epochs", 0))  # past the ε warm-up: full-strength attacks

    def step():
        out = method.loss(model, x, y, epoch)
        loss = out[0] if isinstance(out, tuple) else out
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


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
    gaussian = dict(method_hparams(config, "smoothadv", args.dataset, sigma) or {}, epochs=150, batch_size=256)
    rows = []
    for name in METHODS:
        hparams = gaussian if name == "gaussian" else method_hparams(config, name, args.dataset, sigma)
        if hparams is None:
            continue
        batch = max(1, round(int(hparams["batch_size"]) * args.batch_scale))
        per_step = time_steps(name, hparams, float(sigma), args.arch, batch, args.steps, device)
        steps_per_epoch = math.ceil(TRAIN_SIZE[args.dataset] / int(hparams["batch_size"]))
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
