"""Per-step costs measured on the job's device: a few real optimisation steps of each configured
training setting and certification's noisy forward pass (SPEC "Performance")."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rslib.costs.estimate import _key, cost_hparams
from rslib.runtime.devices import (
    device_name,
    free_cached_memory,
    is_out_of_memory,
    synchronize,
)


def _spec(dataset: str, arch: str, method: str, sigma: float, hparams: dict[str, Any],
          settings: Mapping[str, Any] | None = None):
    from rslib.data.registry import dataset_info
    from rslib.models.checkpoint import ModelSpec

    info = dataset_info(dataset, settings)
    spec = ModelSpec(
        arch=arch, dataset=dataset, num_classes=info.num_classes, in_channels=info.image_shape[0],
        mean=tuple(info.mean), std=tuple(info.std), sigma=float(sigma), method=method, seed=0,
        hparams=dict(hparams),
    )
    return spec, info


def time_train_step(
    dataset: str, arch: str, method: str, sigma: float, hparams: dict[str, Any], dev, steps: int = 3, warmup: int = 1,
    settings: Mapping[str, Any] | None = None, module: str | None = None,
) -> float:
    """Mean wall seconds of one optimisation step (see :func:`_time_train_step`); frees the
    device's cached memory afterwards (the model and batches are gone by then). ``settings``: the
    dataset's configuration entry (a dataset of the user's own is read from it); ``module``
    (``methods.<method>.module``) names the class of a method of the user's own."""
    try:
        return _time_train_step(dataset, arch, method, sigma, hparams, dev, steps, warmup, settings, module)
    finally:
        free_cached_memory(dev)


def _time_train_step(
    dataset: str, arch: str, method: str, sigma: float, hparams: dict[str, Any], dev, steps: int = 3, warmup: int = 1,
    settings: Mapping[str, Any] | None = None, module: str | None = None,
) -> float:
    """Mean wall seconds of one optimisation step as :func:`rslib.training.loop.train_loop` runs it.

    Each step does what the loop does per mini-batch: gather a uint8 batch held on the device and
    scale it to [0, 1], seed the RNG, augment (per ``hparams["augment"]``), ``_step`` (method loss,
    backward, SGD step) and read the loss on the host. Timed at the last epoch (past warm-ups).
    """
    import torch

    from rslib.certification.noise import mix_seed
    from rslib.training.driver import get_method
    from rslib.training.loop import OptimConfig, _step, augment_batch

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    spec, info = _spec(dataset, arch, method, sigma, hparams, settings)
    optim = OptimConfig.from_hparams(hparams)
    augment = hparams.get("augment") or {}
    torch.manual_seed(0)
    model = spec.build().to(dev)
    training = get_method(method, module)(sigma, hparams)
    optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    g = torch.Generator().manual_seed(0)
    pool = 2 * optim.batch_size
    images = torch.randint(0, 256, (pool, *info.image_shape), generator=g, dtype=torch.uint8).to(dev)
    labels = torch.randint(0, info.num_classes, (pool,), generator=g).to(dev)
    epoch = max(optim.epochs - 1, 0)
    model.train()

    def one(step: int) -> None:
        idx = torch.randperm(pool, generator=g)[: optim.batch_size].to(dev)
        x, y = images[idx].float().div_(255), labels[idx]
        torch.manual_seed(mix_seed(0, 102, epoch, step))
        x = augment_batch(x, int(augment.get("crop_padding", 0)), bool(augment.get("flip", False)))
        loss, _ = _step(training, model, optimizer, x, y, epoch)
        float(loss)  # the loop reads the loss every step (a host sync)

    for s in range(warmup):
        one(s)
    synchronize(dev)
    started = time.perf_counter()
    for s in range(steps):
        one(warmup + s)
    synchronize(dev)
    return (time.perf_counter() - started) / steps


def time_certify_sample(
    dataset: str, arch: str, dev, batch_size: int = 1000, steps: int = 3, warmup: int = 1, autocast_bf16: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> tuple[float, int]:
    """Mean wall seconds per noisy sample of ``Smooth.sample_counts`` (CERTIFY's inner loop:
    seeded noise, forward pass in inference mode, argmax counts), timed over ``steps`` calls of
    one batch each. When the device runs out of memory the batch is halved (in whole noise
    blocks) and the measurement starts again, warm-up included; a batch halved inside ``Smooth``
    (:meth:`Smooth._sample_noise`) counts too. Returns ``(seconds_per_sample, batch_size_used)``."""
    import torch

    from rslib.certification.noise import BLOCK, round_batch_size
    from rslib.certification.smooth import Smooth

    spec, info = _spec(dataset, arch, "certify", 0.25, {}, settings)
    torch.manual_seed(0)
    model = spec.build().to(dev)
    smooth = Smooth(model, info.num_classes, 0.25, noise_seed=0, device=dev, autocast_bf16=autocast_bf16)
    x = torch.rand(info.image_shape, generator=torch.Generator().manual_seed(0))
    batch = round_batch_size(batch_size)
    try:
        while True:
            try:
                for s in range(warmup):
                    smooth.sample_counts(x, batch, batch, index=s, phase="estimation")
                synchronize(dev)
                started = time.perf_counter()
                for s in range(steps):
                    smooth.sample_counts(x, batch, batch, index=warmup + s, phase="estimation")
                synchronize(dev)
                seconds = (time.perf_counter() - started) / (steps * batch)
                return seconds, min(batch, smooth.batch_limit or batch)
            except Exception as error:
                if not is_out_of_memory(error) or batch <= BLOCK:
                    raise
            free_cached_memory(dev)  # outside the handler: the error's frames no longer hold the batch
            batch = round_batch_size(batch // 2)
    finally:
        del smooth, model
        free_cached_memory(dev)


def measure_costs(
    jobs: list[dict],
    device: str,
    steps: int = 3,
    warmup: int = 1,
    certify_batch: int = 1000,
    autocast_bf16: bool = False,
    log=None,
    datasets: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict]:
    """Time the training step of each distinct (dataset, arch, method, cost hyper-parameters)
    in ``jobs`` and certification's noisy forward pass of each (dataset, arch).

    ``jobs``: dicts with ``dataset``, ``arch``, ``method``, ``sigma``, ``hparams`` (and ``module``
    for a method of the user's own: :meth:`rslib.experiment.plan.Plan.train_cost_jobs`). Jobs that differ
    only in σ, seed or schedule (:data:`SCHEDULE_KEYS`) share one measurement (σ of the first).
    Returns records ``{kind: "train", dataset, arch, method, sigma, batch_size, hparams,
    seconds_per_step, steps, device}`` and ``{kind: "certify", dataset, arch, batch_size,
    seconds_per_sample, device}``. ``datasets``: the configuration's ``datasets`` section, which
    a dataset of the user's own is read from.
    """
    from rslib.runtime.devices import resolve_device

    dev = resolve_device(device)
    name = device_name(dev)
    say = log or (lambda m: None)
    records: list[dict] = []
    seen: set[tuple] = set()
    pairs: list[tuple[str, str]] = []
    for job in jobs:
        hparams = dict(job["hparams"])
        key = (job["dataset"], job["arch"], job["method"], _key(hparams))
        if (job["dataset"], job["arch"]) not in pairs:
            pairs.append((job["dataset"], job["arch"]))
        if key in seen:
            continue
        seen.add(key)
        seconds = time_train_step(job["dataset"], job["arch"], job["method"], float(job["sigma"]), hparams, dev, steps,
                                  warmup, (datasets or {}).get(job["dataset"]), module=job.get("module"))
        record = {
            "kind": "train", "dataset": job["dataset"], "arch": job["arch"], "method": job["method"],
            "sigma": float(job["sigma"]), "batch_size": int(hparams["batch_size"]), "hparams": cost_hparams(hparams),
            "seconds_per_step": seconds, "steps": int(steps), "device": name,
        }
        say(f"{job['dataset']} {job['arch']} {job['method']} sigma={float(job['sigma']):g} "
            f"batch {record['batch_size']}: {seconds:.4g} s/step on {name}")
        records.append(record)
    for dataset, arch in pairs:
        seconds, batch = time_certify_sample(dataset, arch, dev, certify_batch, steps, warmup, autocast_bf16,
                                             (datasets or {}).get(dataset))
        records.append({
            "kind": "certify", "dataset": dataset, "arch": arch, "batch_size": batch,
            "autocast_bf16": bool(autocast_bf16), "seconds_per_sample": seconds, "steps": int(steps), "device": name,
        })
        say(f"{dataset} {arch} certify batch {batch}: {seconds:.4g} s/sample ({1 / seconds:.0f} samples/s) on {name}")
    return records
