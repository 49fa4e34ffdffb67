"""Your own model: a small depthwise-separable CNN (MobileNet-style blocks; rslib defines no such
architecture), trained on the embedded digits data under Gaussian noise with Jeong & Shin 2020's
Consistency objective and saved as a TorchScript archive (``torch.jit.save``), the one file a
model of another codebase needs to be certified by rslib and tabled by its workflow.

    python examples/your_model_your_method/separable_cnn.py   # → results/example/my_model/noise_0.25/separable_cnn.ts

Seeded: the same arguments give the same weights (on one machine and torch version). Seconds on a
CPU. docs/example.md walks through the whole example.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from rslib.data.load import load_split
from rslib.data.prepare import prepare_dataset
from rslib.data.registry import dataset_info
from rslib.models.checkpoint import torchscript_deprecation_silenced
from rslib.training.consistency import consistency_loss
from rslib.training.copies import noisy_copies


class SeparableBlock(nn.Module):
    """Depthwise 3×3 convolution (one filter per channel) then pointwise 1×1, each with batch norm and ReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, stride, 1, groups=channels_in, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_in)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(self.bn2(self.pointwise(x)))


class SeparableCNN(nn.Module):
    """8×8 grey digits → 10 logits: a 3×3 stem, two separable blocks (the second halves the
    resolution), global average pooling, a linear layer. It normalises its input itself, so it
    takes [0, 1] pixels (plus noise) as they are: rslib's default input layer for a TorchScript
    model, ``none``."""

    def __init__(self, mean: float, std: float, classes: int = 10, width: int = 32):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(SeparableBlock(width, 2 * width), SeparableBlock(2 * width, 4 * width, stride=2))
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem((x - self.mean) / self.std))
        return self.head(x.mean(dim=(2, 3)))


def train(data_dir: str, sigma: float, *, epochs: int, batch_size: int, lr: float, copies: int, lbd: float,
          eta: float, seed: int) -> SeparableCNN:
    """A SeparableCNN trained on digits' training split with the Consistency objective
    (:func:`rslib.training.consistency.consistency_loss`: cross-entropy over ``copies`` noisy copies
    x + N(0, σ²I) of each image, plus λ·KL to their average and η·its entropy), SGD with momentum
    and a cosine learning-rate decay; in eval mode."""
    info = dataset_info("digits")
    train_split = load_split(prepare_dataset("digits", data_dir), "train")
    images, labels = train_split.images.float() / 255, train_split.labels
    torch.manual_seed(seed)
    net = SeparableCNN(info.mean[0], info.std[0], info.num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps = epochs * (len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels) - batch_size + 1, batch_size):  # whole batches only
            batch = order[start:start + batch_size]
            logits = net(noisy_copies(images[batch], copies, sigma))
            loss = consistency_loss(logits, labels[batch], copies, lbd, eta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/example/my_model/noise_0.25/separable_cnn.ts",
                        help="the TorchScript archive to write (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.25, help="training noise level σ (default: %(default)s)")
    parser.add_argument("--data-dir", default="data", help="where digits is prepared (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, batch order and noise (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: more threads only wait on each other (and one is bit-reproducible)
    # Jeong & Shin 2020's σ = 0.25 setting: m = 2 copies, λ = 20, η = 0.5
    net = train(args.data_dir, args.sigma, epochs=args.epochs, batch_size=64, lr=0.05, copies=2, lbd=20.0, eta=0.5,
                seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torchscript_deprecation_silenced():  # torch 2.14 warns that TorchScript is deprecated; it still works
        torch.jit.save(torch.jit.script(net), str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
