"""The training loop shared by every method: SGD with a multi-step schedule, deterministic
data order and noise, a checkpoint after every epoch, resume, and SIGTERM → checkpoint → exit.

Determinism: the data order of epoch e is a permutation seeded by ``(seed, e)``; before step s
of epoch e the global torch RNG is seeded with ``(seed, e, s)``, so augmentation and every
noise draw of the method are a pure function of the position in training. A run resumed from
any checkpoint (end of epoch, or mid-epoch after SIGTERM) therefore ends with the same weights
as an uninterrupted one (bit-identical on CPU with the same thread count).

Checkpoints live in ``checkpoint_dir``, which the workflow keeps outside the rule's declared
outputs: Snakemake deletes declared outputs before every attempt, and SLURM retries after a
time-limit kill must find the training state.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rslib.certification.noise import mix_seed
from rslib.models.checkpoint import read_checkpoint
from rslib.runtime.io import atomic_path
from rslib.runtime.progress import format_duration
from rslib.training.base import TrainingMethod

_ORDER, _STEP, _INIT = 101, 102, 103  # seed-stream tags

STATE_FILE = "state.pt"


class Preempted(SystemExit):
    """Raised after SIGTERM once the state is saved; exits with 128 + SIGTERM so that SLURM and
    Snakemake see a failed attempt and retry (which resumes)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass(frozen=True)
class OptimConfig:
    """SGD + step schedule. ``lr_milestones``: epochs after which lr is multiplied by ``lr_gamma``."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> OptimConfig:
        return cls(
            epochs=int(hparams["epochs"]),
            batch_size=int(hparams["batch_size"]),
            lr=float(hparams["lr"]),
            momentum=float(hparams.get("momentum", 0.9)),
            weight_decay=float(hparams.get("weight_decay", 1e-4)),
            lr_milestones=tuple(int(m) for m in hparams.get("lr_milestones", ())),
            lr_gamma=float(hparams.get("lr_gamma", 0.1)),
        )

    def lr_at(self, epoch: int) -> float:
        return multistep_lr(self.lr, self.lr_gamma, self.lr_milestones, epoch)


def multistep_lr(lr: float, gamma: float, milestones: tuple[int, ...], epoch: int) -> float:
    """The learning rate during 0-based ``epoch`` (``epoch`` epochs completed): ``lr`` times
    ``gamma`` once per milestone reached. Shared by training and SWEEN's weight fitting."""
    return lr * gamma ** sum(epoch >= m for m in milestones)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed inside `epoch` (non-zero only after a mid-epoch stop)
    seconds: float = 0.0  # training wall time so far, summed over attempts
    history: list[dict[str, float]] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0})


def augment_batch(x: torch.Tensor, crop_padding: int = 0, flip: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image, on the device;
    draws from ``generator`` (on x's device) when given, else from torch's global generator."""
    if crop_padding:
        n, _, h, w = x.shape
        p = crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class InMemoryBatches:
    """Mini-batches of a uint8 image tensor held on the device (digits, CIFAR-10, SVHN)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, device: torch.device):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(labels) / batch_size)

    def epoch(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, _ORDER, epoch))
        order = torch.randperm(len(self.labels), generator=g).to(self.images.device)
        for step in range(start_step, self.steps_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self.images[idx].float().div_(255), self.labels[idx]


class LoaderBatches:
    """Mini-batches from a torch Dataset (ImageNet folders) with a seeded per-epoch order."""

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, seed: int, device: torch.device, workers: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.workers = workers
        self.steps_per_epoch = math.ceil(len(dataset) / batch_size)

    def epoch(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, _ORDER, epoch))
        order = torch.randperm(len(self.dataset), generator=g)[start_step * self.batch_size :].tolist()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=order, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)),
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@contextmanager
def sigterm_flag() -> Iterator[Callable[[], bool]]:
    """Turn SIGTERM into a flag the loop polls after each step (main thread only)."""
    received = {"flag": False}

    def handler(signum, frame):  # noqa: ARG001
        received["flag"] = True
        print("SIGTERM received: saving training state after this step", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield lambda: received["flag"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _save_state(path: Path, run_key: str, model, optimizer, state: TrainState) -> None:
    blob = {
        "run_key": run_key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "seconds": state.seconds,
        "history": state.history,
        "running": state.running,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_state(path: Path, run_key: str, model, optimizer, log: Callable[[str], None]) -> TrainState:
    if not path.exists():
        return TrainState()
    blob = read_checkpoint(path, recover=f"delete {path} and rerun (no rule writes it; training restarts from epoch 0)")
    if blob.get("run_key") != run_key:
        log(f"discarding training state {path}: it belongs to other settings (run key {blob.get('run_key')} != {run_key})")
        path.unlink()
        return TrainState()
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    state = TrainState(blob["epoch"], blob["step"], blob["seconds"], blob["history"], blob["running"])
    log(f"resuming from {path}: epoch {state.epoch}, step {state.step}, {state.seconds:.1f}s trained so far")
    return state


def train_loop(
    model: torch.nn.Module,
    method: TrainingMethod,
    batches: InMemoryBatches | LoaderBatches,
    optim: OptimConfig,
    *,
    seed: int,
    checkpoint_dir: str | Path,
    run_key: str,
    augment: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    on_epoch_end: Callable[[int, torch.nn.Module, TrainState], None] | None = None,
) -> TrainState:
    """Train ``model`` in place with ``method``; resume from ``checkpoint_dir`` if it holds a
    state for the same ``run_key``. Returns the final state (history, seconds)."""
    checkpoint_dir = Path(checkpoint_dir)
    state_path = checkpoint_dir / STATE_FILE
    optimizer = torch.optim.SGD(
        model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )
    state = _load_state(state_path, run_key, model, optimizer, log)
    augment = augment or {}
    steps = batches.steps_per_epoch
    report_every = max(1, steps // 10) if steps >= 50 else steps

    with sigterm_flag() as stop_requested:
        while state.epoch < optim.epochs:
            epoch = state.epoch
            for group in optimizer.param_groups:
                group["lr"] = optim.lr_at(epoch)
            model.train()
            started = time.perf_counter()
            for x, y in batches.epoch(epoch, state.step):
                torch.manual_seed(mix_seed(seed, _STEP, epoch, state.step))
                x = augment_batch(x, int(augment.get("crop_padding", 0)), bool(augment.get("flip", False)))
                loss, logits = _step(method, model, optimizer, x, y, epoch)
                state.running["loss"] += float(loss) * len(y)
                if logits is not None:
                    state.running["correct"] += float((logits.argmax(1) == y).sum())
                state.running["count"] += len(y)
                state.step += 1
                if state.step % report_every == 0 and state.step < steps:
                    log(f"epoch {epoch + 1}/{optim.epochs} step {state.step}/{steps} loss {float(loss):.4f}")
                if stop_requested() and state.step < steps:  # on the last step, finish the epoch first
                    state.seconds += time.perf_counter() - started
                    _save_state(state_path, run_key, model, optimizer, state)
                    log(f"saved state at epoch {epoch}, step {state.step}; exiting for a retry to resume")
                    raise Preempted()
            state.seconds += time.perf_counter() - started
            count = max(state.running["count"], 1.0)
            record = {
                "epoch": epoch + 1,
                "lr": optim.lr_at(epoch),
                "loss": state.running["loss"] / count,
                "train_accuracy": state.running["correct"] / count,
                "seconds": state.seconds,
            }
            state.history.append(record)
            state.epoch, state.step = epoch + 1, 0
            state.running = {"loss": 0.0, "correct": 0.0, "count": 0.0}
            if on_epoch_end is not None:
                on_epoch_end(state.epoch, model, state)
            _save_state(state_path, run_key, model, optimizer, state)
            per_epoch = state.seconds / state.epoch  # over every attempt, so a resumed run's ETA holds too
            log(
                f"epoch {record['epoch']}/{optim.epochs} lr {record['lr']:.4g} loss {record['loss']:.4f} "
                f"train-acc {record['train_accuracy']:.3f} ({state.seconds:.1f}s total, {per_epoch:.2f} s/epoch, "
                f"ETA {format_duration(per_epoch * (optim.epochs - state.epoch))})"
            )
            if stop_requested():
                log("SIGTERM received at an epoch boundary; state saved, exiting for a retry to resume")
                raise Preempted()
    return state


def _step(method: TrainingMethod, model, optimizer, x, y, epoch):
    """One optimiser step. Methods may return ``loss`` or ``(loss, logits)`` (logits on the
    inputs the loss scores, used only for the running train accuracy)."""
    out = method.loss(model, x, y, epoch)
    loss, logits = out if isinstance(out, tuple) else (out, None)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), None if logits is None else logits.detach()
