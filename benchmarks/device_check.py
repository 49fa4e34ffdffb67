"""One prepared GPU check: do rslib's CUDA paths work, and how fast are they?

    python benchmarks/device_check.py --out device-check        # on a GPU machine (≤ 8 min, H100/H200)
    python benchmarks/device_check.py --smoke --out /tmp/check  # any CPU, < 1 min: the same code paths
    make device-check                                           # the first, with the project's venv

Needs only PyTorch, NumPy, SciPy, pandas and PyYAML (no Snakemake, no dataset, no network):
a GPU machine's own Python can run it from a checkout (the script puts the checkout on
``sys.path`` itself).

Correctness, on the chosen device:

* ``train_steps``: a few optimisation steps of every training method (its ``config.yaml``
  CIFAR-10 hyper-parameters at σ = 0.25) on random CIFAR-shaped data: finite losses, weights
  that moved, everything on the device;
* ``sigterm_resume``: training stopped by a real SIGTERM mid-epoch, then resumed, ends with the
  same weights as an uninterrupted run (cuDNN in deterministic mode for this check);
* ``certify_fp32_bf16``: CERTIFY of a model trained here for a moment (Gaussian noise training on
  ten random prototype images) in fp32 and under bf16 autocast (CUDA only): agreement of
  predictions and radii;
* ``stored_vs_direct``: member outputs stored on the device and every fixed-weight ensemble
  scheme certified from them equal direct evaluation of the ensemble (and each member's own
  certificate from its stored counts equals ``Smooth.certify``);
* ``certify_adaptive``: CertifyAdp (``004`` Alg. 2) selects CERTIFY's class and reports its
  sample reduction;
* ``checkpoint_to_cpu``: a model file and a training state written from the device load on
  the CPU and compute the same logits;
* ``oom_backoff``: CERTIFY's out-of-memory back-off (``Smooth._sample_noise``): with the CUDA
  allocator capped at ``oom_cap_mb`` (``torch.cuda.set_per_process_memory_fraction``), a batch of
  ``oom_batch`` ResNet-110 samples runs out of memory; the batch is halved until it fits, one log
  line each, and the counts equal a run at the final batch from the start (on the CPU, smoke: the
  model raises ``torch.OutOfMemoryError`` above a batch size, as the allocator does);
* ``torchscript_model``: a network as a TorchScript archive, imported as the workflow imports it
  (``rslib.models.released.load_any_model``), saved as an rslib model file and loaded on the
  device (channels-last on CUDA): its certificates equal those of the imported network, and
  agree with the eager network it was scripted from;
* ``exported_model``: the same for a ``torch.export`` archive (``.pt2``, format ``exported``) of
  the network exported on the CPU with a dynamic batch, run on the device;

Speed (``--smoke`` shrinks every size; its figures exercise the code and estimate nothing):

* ``certify_speed``: samples/s of ResNet-110 at n = 100,000 (batch ``certify.batch_size``) for
  rslib in fp32 (NCHW and channels-last), bf16 channels-last and bf16 channels-last with cuDNN
  autotuning, the Cohen-style reference loop and the bare forward pass, interleaved rounds;
* ``train_speed``: seconds per optimisation step of every training setting of ``config.yaml``
  (``rslib.costs.measure.measure_costs``), the GPU-hour projection of the full grid (58 trainings and
  their certification, ``rslib.experiment.plan.full_grid``: the workflow's own plan) and, per Table 2 row, the projected training
  hours of one model next to the paper's (V100).

Writes ``device_check.json`` (every figure) and ``device_check.txt`` (the printed table) under
``--out``. Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # rslib from this checkout, also without an installed package

import torch  # noqa: E402

from benchmarks.certify_throughput import (  # noqa: E402
    forward_only,
    interleaved_seconds,
    median_ratio,
    reference_counts,
    summarize,
)
from rslib.data.registry import dataset_info  # noqa: E402
from rslib.runtime.devices import synchronize  # noqa: E402

CIFAR_SHAPE = (3, 32, 32)
CIFAR_MEAN, CIFAR_STD = dataset_info("cifar10").mean, dataset_info("cifar10").std
PAPER_GPU = "V100"


@dataclass(frozen=True)
class Sizes:
    """Every size of the check; ``SMOKE`` shrinks them to run on a CPU in seconds."""

    arch: str  # correctness checks
    batch: int  # training mini-batch of the correctness checks
    train_steps: int  # optimisation steps per method
    prototype_steps: int  # Gaussian training steps of the models that the CERTIFY checks use
    prototype_batch: int
    prototype_trained: int  # of the 3 ensemble members; the others are perturbed copies of the first
    certify_images: int
    certify_n: int
    ensemble_images: int
    ensemble_n: int
    adaptive_stages: tuple[int, ...]
    speed_arch: str
    speed_n: int
    speed_batch: int
    speed_rounds: int
    cost_steps: int  # timed steps per training setting (rslib.costs.measure.measure_costs)
    shrink_hparams: bool  # batch 8, two noise copies, one attack step: the smoke size of every method
    oom_batch: int  # the batch that runs out of memory in check_oom_backoff (of speed_arch on CIFAR shapes)
    oom_cap_mb: int  # the CUDA allocator's cap there (the CPU: the largest batch that fits, in samples)


FULL = Sizes("resnet20", 64, 3, 150, 64, 3, 20, 10_000, 8, 2_000, (1_000, 10_000), "resnet110", 100_000, 1_000, 3, 5, False,
             16_000, 1_024)
SMOKE = Sizes("small_cnn", 8, 2, 40, 16, 1, 4, 300, 2, 100, (100, 200), "small_cnn", 400, 200, 1, 1, True, 400, 150)


def shrink(hparams: dict[str, Any]) -> dict[str, Any]:
    """The smoke size of a method's hyper-parameters: the same keys, the smallest work per step."""
    small = dict(hparams, batch_size=8)
    for key in ("num_noise_vec", "num_steps"):
        if key in small:
            small[key] = 2 if key == "num_noise_vec" else 1  # Consistency needs two copies
    return small


# --- results ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn | skip
    summary: str
    figures: dict[str, Any]
    seconds: float


def run_check(name: str, fn: Callable[[], tuple[str, str, dict[str, Any]]]) -> Check:
    """Run one check; an exception is a failure with its first line (traceback in the JSON)."""
    print(f"[{name}] ...", flush=True)
    started = time.perf_counter()
    try:
        status, summary, figures = fn()
    except Exception as exc:  # noqa: BLE001 - a check's crash is its result
        first = str(exc).splitlines()[0] if str(exc) else ""
        status, summary = "fail", f"{type(exc).__name__}: {first}"
        figures = {"traceback": traceback.format_exc()}
    check = Check(name, status, summary, figures, time.perf_counter() - started)
    print(f"[{name}] {status}: {summary} ({check.seconds:.1f}s)", flush=True)
    return check


# --- shared pieces ---------------------------------------------------------------------------


def _config() -> dict[str, Any]:
    """The paper's configuration with the schema's defaults, as the workflow reads it (no
    Snakemake or jsonschema needed)."""
    import yaml

    from rslib.experiment.config import with_defaults

    return with_defaults(yaml.safe_load((REPO / "config.yaml").read_text()),
                         yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text()))


def _method_hparams(config: dict[str, Any], method: str, sizes: Sizes) -> dict[str, Any] | None:
    """The method's CIFAR-10 σ = 0.25 hyper-parameters in config.yaml (None: not configured there)."""
    from rslib.experiment.config import configured_hparams

    hparams = configured_hparams(config, method, "cifar10", 0.25)
    return None if hparams is None else shrink(hparams) if sizes.shrink_hparams else hparams


def _cifar_model(arch: str, seed: int = 0) -> torch.nn.Module:
    from rslib.models.architectures import build_model

    torch.manual_seed(seed)
    return build_model(arch, 10, 3, CIFAR_MEAN, CIFAR_STD)


def _random_batch(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *CIFAR_SHAPE), generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


class Prototypes:
    """Ten classes, each a flat image of its own random colour, and labelled noisy copies of
    them: a task a network learns in a few dozen steps (global pooling sees the colour through
    the noise), so that CERTIFY sees a model with real margins and real radii."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        colours = 0.15 + 0.7 * torch.rand((10, 3, 1, 1), generator=torch.Generator().manual_seed(0))
        self.images = colours.expand(10, *CIFAR_SHAPE).contiguous()
        self.generator = g

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (n,), generator=self.generator)
        x = self.images[labels] + 0.05 * torch.randn((n, *CIFAR_SHAPE), generator=self.generator)
        return x.clamp(0, 1), labels

    def test_set(self, n: int) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(n)
        return [(x[i], int(y[i])) for i in range(n)]


def trained_models(sizes: Sizes, device: torch.device, count: int) -> list[torch.nn.Module]:
    """``count`` models: the first ``sizes.prototype_trained`` (seeds 0, 1, …) trained with Gaussian
    noise (σ = 0.25) on the prototypes, the rest copies of the first with every weight perturbed
    by 5% Gaussian noise (distinct members at the smoke size's cost of one training)."""
    from rslib.training.driver import get_method
    from rslib.training.loop import _step

    data = Prototypes()
    models = []
    for seed in range(min(count, sizes.prototype_trained)):
        model = _cifar_model(sizes.arch, seed).to(device).train()
        method = get_method("gaussian")(0.25, {})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(sizes.prototype_steps):
            x, y = data.batch(sizes.prototype_batch)
            torch.manual_seed(1000 * seed + step)
            _step(method, model, optimizer, x.to(device), y.to(device), 0)
        models.append(model.eval())
    g = torch.Generator().manual_seed(1)
    while len(models) < count:
        copy = _cifar_model(sizes.arch).to(device)
        state = {k: v + 0.05 * v.abs() * torch.randn(v.shape, generator=g).to(device) if v.is_floating_point() else v
                 for k, v in models[0].state_dict().items()}
        copy.load_state_dict(state)
        models.append(copy.eval())
    return models


# --- correctness -----------------------------------------------------------------------------


def check_train_steps(sizes: Sizes, device: torch.device):
    from rslib.training.driver import METHODS
    from rslib.training.loop import OptimConfig, _step, augment_batch

    config = _config()
    figures, failed = {}, []
    for name, cls in METHODS.items():
        hparams = _method_hparams(config, name, sizes) or {"batch_size": sizes.batch}
        optim = OptimConfig.from_hparams({"epochs": 1, "lr": 0.1, **hparams})
        model = _cifar_model(sizes.arch).to(device).train()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=optim.momentum)
        method = cls(0.25, hparams)
        epoch = int(hparams.get("epochs", 1)) - 1  # past every warm-up
        losses = []
        x, y = _random_batch(min(optim.batch_size, sizes.batch), device)
        started = time.perf_counter()
        for step in range(sizes.train_steps):
            torch.manual_seed(step)
            augmented = augment_batch(x, 4, True)
            loss, _ = _step(method, model, optimizer, augmented, y, epoch)
            losses.append(float(loss))
        synchronize(device)
        moved = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
        on_device = all(p.device.type == device.type for p in model.parameters())
        ok = all(math.isfinite(v) for v in losses) and moved > 0 and on_device
        figures[name] = {"losses": losses, "max_weight_change": moved, "on_device": on_device,
                         "seconds_per_step": (time.perf_counter() - started) / sizes.train_steps,
                         "batch": len(y), "hparams": hparams}
        if not ok:
            failed.append(name)
    summary = (f"{len(METHODS)} methods x {sizes.train_steps} steps: "
               + ("finite losses, weights moved" if not failed else f"failed: {', '.join(failed)}"))
    return ("fail" if failed else "pass"), summary, figures


class _TerminateAt:
    """Wraps a method so that its ``at``-th loss call sends SIGTERM to this process (a
    deterministic stand-in for a SLURM preemption in the middle of an epoch)."""

    def __init__(self, method, at: int):
        self.method, self.at, self.calls = method, at, 0

    def loss(self, model, x, y, epoch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.method.loss(model, x, y, epoch)


@contextmanager
def _deterministic():
    previous = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous


def check_sigterm_resume(sizes: Sizes, device: torch.device, workdir: Path):
    from rslib.models.checkpoint import read_checkpoint
    from rslib.training.driver import get_method
    from rslib.training.loop import (
        STATE_FILE,
        InMemoryBatches,
        OptimConfig,
        Preempted,
        train_loop,
    )

    images = torch.randint(0, 256, (4 * sizes.batch, *CIFAR_SHAPE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (4 * sizes.batch,), generator=torch.Generator().manual_seed(1))
    optim = OptimConfig(epochs=2, batch_size=sizes.batch, lr=0.05, lr_milestones=(1,))
    quiet = lambda m: None  # noqa: E731

    def train(folder: Path, stop_at: int | None) -> dict[str, torch.Tensor]:
        model = _cifar_model(sizes.arch).to(device)
        method = get_method("gaussian")(0.25, {})
        if stop_at is not None:
            method = _TerminateAt(method, stop_at)
        batches = InMemoryBatches(images, labels, optim.batch_size, 0, device)
        train_loop(model, method, batches, optim, seed=0, checkpoint_dir=folder, run_key="device-check",
                   augment={"crop_padding": 4, "flip": True}, log=quiet)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    with _deterministic():
        reference = train(workdir / "uninterrupted", None)
        stopped = False
        try:
            train(workdir / "resumed", 3)  # step 3 of 4 in epoch 0
        except Preempted:
            stopped = True
        state = read_checkpoint(workdir / "resumed" / STATE_FILE)
        resumed = train(workdir / "resumed", None)
    difference = max(float((reference[k].double() - resumed[k].double()).abs().max()) for k in reference)
    figures = {"stopped_by_sigterm": stopped, "saved_at": [state["epoch"], state["step"]],
               "max_abs_weight_difference": difference}
    if not stopped or (state["epoch"], state["step"]) != (0, 3):
        return "fail", f"SIGTERM did not stop training at step 3 (saved at {figures['saved_at']})", figures
    if difference == 0.0:
        return "pass", "stopped at epoch 0 step 3, resumed: bit-identical weights", figures
    status = "warn" if difference < 1e-4 else "fail"
    return status, f"resumed weights differ from uninterrupted ones by up to {difference:.3g}", figures


def check_certify_fp32_bf16(sizes: Sizes, device: torch.device, models: list[torch.nn.Module]):
    from rslib.certification.smooth import Smooth

    test = Prototypes().test_set(sizes.certify_images)
    variants = {"fp32": False, "bf16": True} if device.type == "cuda" else {"fp32": False}
    results: dict[str, list[tuple[int, float]]] = {}
    seconds: dict[str, float] = {}
    for name, bf16 in variants.items():
        smooth = Smooth(models[0], 10, 0.25, noise_seed=0, device=device, autocast_bf16=bf16)
        started = time.perf_counter()
        results[name] = [smooth.certify(x, 100, sizes.certify_n, 0.001, 1000, index=i) for i, (x, _) in enumerate(test)]
        seconds[name] = time.perf_counter() - started
    labels = [y for _, y in test]
    fp32 = results["fp32"]
    figures: dict[str, Any] = {
        "images": len(test), "n": sizes.certify_n, "seconds": seconds,
        "fp32": {"accuracy": sum(p == y for (p, _), y in zip(fp32, labels)) / len(test),
                 "mean_radius": sum(r for _, r in fp32) / len(test), "abstain": sum(p < 0 for p, _ in fp32)},
    }
    if "bf16" not in results:
        return "pass", f"fp32 on {device.type}: accuracy {figures['fp32']['accuracy']:.2f}, bf16 needs CUDA", figures
    bf16 = results["bf16"]
    agreement = sum(a[0] == b[0] for a, b in zip(fp32, bf16)) / len(test)
    radius_gap = max(abs(a[1] - b[1]) for a, b in zip(fp32, bf16))
    figures.update(bf16={"mean_radius": sum(r for _, r in bf16) / len(test)}, prediction_agreement=agreement,
                   max_radius_difference=radius_gap)
    status = "pass" if agreement >= 0.9 else "warn"
    return status, (f"fp32 vs bf16 on {len(test)} images, n={sizes.certify_n}: predictions agree on {agreement:.0%}, "
                    f"radii differ by up to {radius_gap:.3f}"), figures


def check_stored_vs_direct(sizes: Sizes, device: torch.device, models: list[torch.nn.Module], workdir: Path):
    import pandas as pd

    from rslib.certification.smooth import Smooth, certify_from_counts
    from rslib.ensembles.certify import (
        certify_scheme_direct,
        certify_scheme_from_outputs,
    )
    from rslib.ensembles.outputs import compute_member_outputs
    from rslib.ensembles.schemes import SCHEMES

    config = _config()
    settings = config["ensembles"]
    test = Prototypes(seed=1).test_set(sizes.ensemble_images)
    indices = list(range(len(test)))
    n, batch = sizes.ensemble_n, 1000
    outputs = [compute_member_outputs(m, test, indices, 100, n, batch, 0, 0.25, device) for m in models]
    mismatches: list[str] = []
    for k, (model, out) in enumerate(zip(models, outputs)):  # a member's own certificate from its counts
        smooth = Smooth(model, 10, 0.25, noise_seed=0, device=device)
        for pos, (x, _) in enumerate(test):
            direct = smooth.certify(x, 100, n, 0.001, batch, index=pos)
            stored = certify_from_counts(out["selection_counts"][pos], out["estimation_counts"][pos], 0.001, 0.25)
            if direct != stored:
                mismatches.append(f"member {k} image {pos}: {stored} != {direct}")
    schemes = [s for s in SCHEMES.values() if not s.fitted and not s.per_point]
    for scheme in schemes:
        stored_tsv, direct_tsv = workdir / f"{scheme.name}-stored.tsv", workdir / f"{scheme.name}-direct.tsv"
        certify_scheme_from_outputs(outputs, scheme, settings, 0.001, 0.25, stored_tsv)
        certify_scheme_direct(models, list(range(len(models))), test, indices, scheme, settings, num_classes=10,
                              sigma=0.25, n0=100, n=n, alpha=0.001, batch_size=batch, noise_seed=0,
                              out_tsv=direct_tsv, device=device, log=lambda m: None)
        a, b = pd.read_csv(stored_tsv, sep="\t"), pd.read_csv(direct_tsv, sep="\t")
        if not (a["predict"].equals(b["predict"]) and a["radius"].equals(b["radius"])):
            mismatches.append(f"{scheme.name}: stored {a[['predict', 'radius']].values.tolist()} "
                              f"!= direct {b[['predict', 'radius']].values.tolist()}")
    figures = {"members": len(models), "images": len(test), "n": n, "schemes": [s.name for s in schemes],
               "mismatches": mismatches}
    summary = (f"{len(models)} members x {len(test)} images, n={n}: member counts and {len(schemes)} schemes "
               + ("identical to direct evaluation" if not mismatches else f"{len(mismatches)} mismatches"))
    return ("fail" if mismatches else "pass"), summary, figures


def check_certify_adaptive(sizes: Sizes, device: torch.device, models: list[torch.nn.Module]):
    from rslib.certification.adaptive import certify_adaptive_images
    from rslib.certification.smooth import Smooth

    test = Prototypes(seed=2).test_set(sizes.certify_images)
    smooth = Smooth(models[0], 10, 0.25, noise_seed=0, device=device)
    stages = list(sizes.adaptive_stages)
    rows, summaries = certify_adaptive_images(smooth, test, list(range(len(test))), [0.25, 0.5], 100, stages,
                                              0.001, 0.001, 1000, 100 + sum(stages))
    selected_ok = []
    for row in rows:  # a certified class must be CERTIFY's selected class (same selection stream)
        if row["certified"]:
            counts = smooth.sample_counts(test[row["idx"]][0], 100, 1000, index=row["idx"], phase="selection")
            selected_ok.append(int(counts.argmax()) == row["predict"])
    figures = {"stages": stages, "per_radius": summaries, "certified_rows": len(selected_ok)}
    if not all(selected_ok):
        return "fail", "a certified class is not CERTIFY's selected class", figures
    reductions = ", ".join(f"r={s['radius']:g}: {s['sample_reduction']:.2f}x" for s in summaries)
    return "pass", f"{len(test)} images, stages {stages}: sample reduction {reductions}", figures


def check_checkpoint_to_cpu(sizes: Sizes, device: torch.device, models: list[torch.nn.Module], workdir: Path):
    from rslib.models.checkpoint import (
        ModelSpec,
        load_model,
        read_checkpoint,
        save_model,
    )

    model = models[0]
    spec = ModelSpec(arch=sizes.arch, dataset="cifar10", num_classes=10, in_channels=3, mean=CIFAR_MEAN,
                     std=CIFAR_STD, sigma=0.25, method="gaussian", seed=0)
    path = workdir / "model.pt"
    save_model(path, model, spec, {"device": str(device)})
    loaded, _, extra = load_model(path, dataset="cifar10", sigma=0.25, device="cpu")
    x = Prototypes().batch(16)[0]
    reference = _cifar_model(sizes.arch)
    reference.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    with torch.inference_mode():
        same = torch.equal(loaded(x), reference.eval()(x))
    state = workdir / "state.pt"  # a training state as train_loop writes it: tensors still on the device
    torch.save({"model": model.state_dict()}, state)
    blob = read_checkpoint(state)
    on_cpu = all(v.device.type == "cpu" for v in blob["model"].values())
    figures = {"same_logits_on_cpu": same, "state_tensors_on_cpu": on_cpu, "written_on": str(device)}
    ok = same and on_cpu
    return ("pass" if ok else "fail"), f"written on {device}, loaded on cpu: " + (
        "same logits, state readable" if ok else f"same logits {same}, state on cpu {on_cpu}"), figures


class _OutOfMemoryAbove(torch.nn.Module):
    """``model`` that raises torch's out-of-memory error on a batch above ``limit``, as the CUDA
    allocator does (the smoke size's stand-in for a capped GPU)."""

    def __init__(self, model: torch.nn.Module, limit: int):
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (a stand-in: batch {len(x)} > {self.limit})")
        return self.model(x)


def check_oom_backoff(sizes: Sizes, device: torch.device):
    from rslib.certification.smooth import Smooth

    model = _cifar_model(sizes.speed_arch).to(device).eval()
    x = Prototypes().test_set(1)[0][0]
    n, lines = 2 * sizes.oom_batch, []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(sizes.oom_cap_mb * 2**20 / total, device)
        base = model
    else:
        base = _OutOfMemoryAbove(model, sizes.oom_cap_mb)
    try:
        smooth = Smooth(base, 10, 0.25, noise_seed=0, device=device, log=lines.append)
        counts = smooth.sample_counts(x, n, sizes.oom_batch, index=0)
        final = smooth._batch_limit
        reference = Smooth(base, 10, 0.25, noise_seed=0, device=device).sample_counts(x, n, final or sizes.oom_batch,
                                                                                          index=0)
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
    figures = {"n": n, "first_batch": sizes.oom_batch, "final_batch": final, "log": lines,
               "counts": counts.tolist(), "reference_counts": reference.tolist(),
               "cap": f"{sizes.oom_cap_mb} MiB" if device.type == "cuda" else f"{sizes.oom_cap_mb} samples (stand-in)"}
    if final is None or not lines:
        return "fail", f"no out-of-memory back-off at batch {sizes.oom_batch} under the cap {figures['cap']}", figures
    same = torch.equal(counts, reference)
    summary = (f"batch {sizes.oom_batch} -> {final} under a {figures['cap']} cap ({len(lines)} log lines); counts "
               + ("equal a run at that batch from the start" if same else "DIFFER from a run at that batch"))
    return ("pass" if same else "fail"), summary, figures


def check_archive_model(fmt: str, sizes: Sizes, device: torch.device, models: list[torch.nn.Module], workdir: Path):
    """``torchscript_model`` / ``exported_model``: the network saved as a TorchScript or torch.export archive."""
    import copy

    from rslib.certification.smooth import Smooth
    from rslib.models.checkpoint import load_model, save_model, torchscript_deprecation_silenced
    from rslib.models.released import load_any_model

    network = copy.deepcopy(models[0][1]).cpu().eval()
    if fmt == "torchscript":
        archive, what = workdir / "network.ts", "TorchScript"
        with torchscript_deprecation_silenced():
            torch.jit.save(torch.jit.script(network), str(archive))
    else:
        archive, what = workdir / "network.pt2", "Exported (torch.export)"
        program = torch.export.export(network, (torch.rand(2, 3, 32, 32),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(archive))
    imported, spec, record = load_any_model(archive, fmt, dataset="cifar10", sigma=0.25, input_layer="normalize",
                                            device=device)
    path = workdir / f"{fmt}_model.pt"
    save_model(path, imported, spec, {"imported": record})
    loaded, _, _ = load_model(path, dataset="cifar10", sigma=0.25, device=device, allow_code=True)
    test = Prototypes(seed=3).test_set(sizes.certify_images)
    results = {}
    for name, model in (("imported", imported), ("model file", loaded), ("eager", models[0])):
        smooth = Smooth(model, 10, 0.25, noise_seed=0, device=device)
        results[name] = [smooth.certify(x, 100, sizes.certify_n, 0.001, 1000, index=i) for i, (x, _) in enumerate(test)]
    agreement = sum(a[0] == b[0] for a, b in zip(results["model file"], results["eager"])) / len(test)
    figures = {"images": len(test), "n": sizes.certify_n, "channels_last": device.type == "cuda",
               "model_file_equals_imported": results["model file"] == results["imported"],
               "prediction_agreement_with_eager": agreement,
               "max_radius_difference_to_eager": max(abs(a[1] - b[1]) for a, b in
                                                     zip(results["model file"], results["eager"]))}
    if not figures["model_file_equals_imported"]:
        return "fail", "the model file's certificates differ from the imported network's", figures
    status = "pass" if agreement >= 0.9 else "warn"
    return status, (f"{what} network imported, saved, loaded on {device.type}: {len(test)} certificates equal "
                    f"the imported network's; predictions agree with the eager network on {agreement:.0%}"), figures


# --- speed -----------------------------------------------------------------------------------


def check_certify_speed(sizes: Sizes, device: torch.device):
    from rslib.certification.smooth import Smooth

    model = _cifar_model(sizes.speed_arch).to(device).eval()
    x = torch.rand(CIFAR_SHAPE, device=device)
    n, batch = sizes.speed_n, sizes.speed_batch
    nchw = torch.rand((batch, *CIFAR_SHAPE), device=device)
    calls = iter(range(1 << 62))
    cuda = device.type == "cuda"
    smooth_fp32 = Smooth(model, 10, 0.25, device=device, channels_last=False)
    variants: dict[str, Callable[[], object]] = {
        "forward fp32": lambda: forward_only(model, nchw, n),
        "reference (Cohen) fp32": lambda: reference_counts(model, x, n, batch, 0.25, 10, device),
        "rslib fp32": lambda: smooth_fp32.sample_counts(x, n, batch, index=next(calls)),
    }
    if cuda:
        cl_model = _cifar_model(sizes.speed_arch).to(device).eval()
        smooth_cl = Smooth(cl_model, 10, 0.25, device=device, channels_last=True)
        smooth_bf16 = Smooth(cl_model, 10, 0.25, device=device, channels_last=True, autocast_bf16=True)
        cl_batch = nchw.contiguous(memory_format=torch.channels_last)

        def autotuned():
            torch.backends.cudnn.benchmark = True
            try:
                return smooth_bf16.sample_counts(x, n, batch, index=next(calls))
            finally:
                torch.backends.cudnn.benchmark = False

        variants.update({
            "rslib fp32 channels-last": lambda: smooth_cl.sample_counts(x, n, batch, index=next(calls)),
            "forward bf16 channels-last": lambda: forward_only(smooth_bf16.base_classifier, cl_batch, n, True),
            "rslib bf16 channels-last": lambda: smooth_bf16.sample_counts(x, n, batch, index=next(calls)),
            "rslib bf16 channels-last autotuned": autotuned,
        })
    seconds = interleaved_seconds(variants, sizes.speed_rounds, device)
    rates = summarize(seconds, n)
    cost, low, high = median_ratio(seconds["rslib fp32"], seconds["forward fp32"])
    speedup = median_ratio(seconds["reference (Cohen) fp32"], seconds["rslib fp32"])[0]
    figures: dict[str, Any] = {"arch": sizes.speed_arch, "n": n, "batch": batch, "rounds": sizes.speed_rounds,
                               "samples_per_s": rates, "rslib_fp32_cost_over_forward": [cost, low, high],
                               "rslib_fp32_speedup_over_reference": speedup}
    best = max(rates, key=lambda k: rates[k]["samples_per_s"] if k.startswith("rslib") else -1)
    if cuda:
        figures["rslib_bf16_cost_over_forward_bf16"] = median_ratio(
            seconds["rslib bf16 channels-last"], seconds["forward bf16 channels-last"])
        # one image of the paper's protocol: n0 + n samples with the fastest rslib variant
        figures["seconds_per_image_at_100100"] = 100_100 / rates[best]["samples_per_s"]
    summary = (f"{sizes.speed_arch} n={n}: rslib fp32 {rates['rslib fp32']['samples_per_s']:.0f}/s = "
               f"{cost:.3f}x forward cost, {speedup:.2f}x reference; best {best} "
               f"{rates[best]['samples_per_s']:.0f}/s")
    return "pass", summary, figures


def check_train_speed(sizes: Sizes, device: torch.device):

    from rslib.costs.estimate import estimate_gpu_hours, summarize_estimate
    from rslib.costs.measure import measure_costs
    from rslib.data.registry import dataset_info
    from rslib.experiment.plan import full_grid
    from rslib.report.comparison import read_reported

    config = _config()
    train_jobs, certify_jobs = full_grid(config)
    if sizes.shrink_hparams:  # the smoke size: CIFAR-10 only, a tiny network, one step of each setting
        train_jobs = [dict(j, arch=sizes.speed_arch, hparams=shrink(j["hparams"])) for j in train_jobs
                      if j["dataset"] == "cifar10"]
        certify_jobs = [dict(j, arch=sizes.speed_arch) for j in certify_jobs if j["dataset"] == "cifar10"]
    unavailable = _unbuildable({j["arch"] for j in train_jobs})  # resnet50 needs torchvision
    train_jobs = [j for j in train_jobs if j["arch"] not in unavailable]
    certify_jobs = [j for j in certify_jobs if j["arch"] not in unavailable]
    measured = measure_costs(train_jobs, str(device), steps=sizes.cost_steps,
                             certify_batch=int(config["certify"]["batch_size"]) if not sizes.shrink_hparams else 100,
                             log=lambda m: print(f"  {m}", flush=True))
    n_train = {d: dataset_info(d).train_images for d in {j["dataset"] for j in train_jobs}}
    estimate = estimate_gpu_hours(train_jobs, certify_jobs, measured, n_train)
    totals = summarize_estimate(estimate)
    reported = read_reported(REPO / "paper" / "reported.csv")
    paper = reported[(reported["table"] == "table2") & (reported["metric"] == "train_hours")]
    names = {"SmoothAdv": "smoothadv", "AdvMacer": "advmacer", "MACER": "macer"}
    table2 = []
    for row in paper.itertuples():
        mine = estimate[(estimate["rule"] == "train") & (estimate["dataset"] == "cifar10")
                        & (estimate["method"] == names[row.row]) & (estimate["sigma"] == float(row.sigma))]
        if len(mine):
            hours = float(mine.iloc[0]["gpu_hours"])  # one model (the first seed)
            table2.append({"row": row.row, "sigma": row.sigma, "projected_hours": hours,
                           "paper_hours": float(row.value), "ratio": hours / float(row.value)})
    total = float(totals.iloc[-1]["gpu_hours"])
    figures = {
        "per_step": [{k: r[k] for k in ("dataset", "arch", "method", "sigma", "batch_size", "seconds_per_step")}
                     for r in measured if r["kind"] == "train"],
        "certify_seconds_per_sample": [{k: r[k] for k in ("dataset", "arch", "batch_size", "seconds_per_sample")}
                                       for r in measured if r["kind"] == "certify"],
        "grid": totals.to_dict(orient="records"), "trainings": len(train_jobs), "table2": table2,
        "paper_gpu": PAPER_GPU, "left_out": unavailable,
    }
    train_hours = float(estimate.loc[estimate["rule"] == "train", "gpu_hours"].sum())
    ratios = [t["ratio"] for t in table2]
    summary = (f"{len(train_jobs)} trainings: {train_hours:.0f} GPU-h, with certification {total:.0f} GPU-h"
               + (f"; Table 2 hours projected/paper ({PAPER_GPU}) {min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""))
    if unavailable:
        summary += "; left out: " + ", ".join(f"{a} ({why})" for a, why in unavailable.items())
    return ("warn" if unavailable else "pass"), summary, figures


def _unbuildable(archs: set[str]) -> dict[str, str]:
    """Architectures that cannot be built here, with the reason (e.g. no torchvision for resnet50)."""
    from rslib.models.architectures import build_model

    missing = {}
    for arch in sorted(archs):
        try:
            build_model(arch, 10, 3, CIFAR_MEAN, CIFAR_STD)
        except ImportError as exc:
            missing[arch] = str(exc).splitlines()[0]
    return missing


# --- report ----------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    import rslib.runtime.provenance as provenance

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    info["git_commit"] = provenance.git_commit()
    return info


def table(checks: list[Check]) -> str:
    """The checks, one line each, then the speed figures in detail."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':{width}s}  status  seconds  result", "-" * (width + 60)]
    lines += [f"{c.name:{width}s}  {c.status:6s}  {c.seconds:7.1f}  {c.summary}" for c in checks]
    figures = {c.name: c.figures for c in checks if c.status != "fail"}
    if "certify_speed" in figures:
        speed = figures["certify_speed"]
        lines += ["", f"Certification, {speed['arch']}, n={speed['n']}, batch {speed['batch']}, "
                      f"{speed['rounds']} interleaved rounds: median samples/s (slowest-fastest round)"]
        lines += [f"  {name:36s} {r['samples_per_s']:10.0f}  ({r['slowest']:.0f}-{r['fastest']:.0f})"
                  for name, r in speed["samples_per_s"].items()]
    if "train_speed" in figures:
        train = figures["train_speed"]
        lines += ["", "Training step (rslib.costs.measure.measure_costs):"]
        lines += [f"  {r['dataset']:8s} {r['arch']:9s} {r['method']:11s} sigma={r['sigma']:<4g} batch {r['batch_size']:<4d}"
                  f" {r['seconds_per_step']:8.4f} s/step" for r in train["per_step"]]
        lines += [f"  {r['dataset']:8s} {r['arch']:9s} certify     batch {r['batch_size']:<4d}"
                  f" {1 / r['seconds_per_sample']:8.0f} samples/s" for r in train["certify_seconds_per_sample"]]
        lines += ["", f"Projected GPU-hours of the full grid ({train['trainings']} trainings):"]
        lines += [f"  {r['rule']:8s} {r['dataset']:9s} {int(r['jobs']):4d} jobs {r['gpu_hours']:10.1f} h" for r in train["grid"]]
        if train["table2"]:
            lines += ["", f"Table 2, training hours of one CIFAR-10 model: projected here vs the paper ({train['paper_gpu']})"]
            lines += [f"  {t['row']:10s} sigma={t['sigma']}  {t['projected_hours']:8.2f} h  paper {t['paper_hours']:5.1f} h"
                      f"  ratio {t['ratio']:.2f}" for t in train["table2"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for device_check.json and device_check.txt")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU (< 1 min): exercises the code only")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke when no GPU is visible)")
    parser.add_argument("--skip-speed", action="store_true", help="correctness checks only")
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is visible: run on a GPU machine, or pass --smoke for the CPU")
    if device.type != "cuda" and not args.smoke:
        parser.error(f"the full check is for a GPU (device {device}); pass --smoke to exercise it on a CPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    print(f"device check ({'smoke' if args.smoke else 'full'}) on {env['device_name']}: Python {env['python']}, "
          f"torch {env['torch']}", flush=True)
    started = time.perf_counter()
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="rslib-device-check-") as tmp:
        work = Path(tmp)
        checks.append(run_check("train_steps", lambda: check_train_steps(sizes, device)))
        (work / "sigterm").mkdir()
        checks.append(run_check("sigterm_resume", lambda: check_sigterm_resume(sizes, device, work / "sigterm")))
        models: list[torch.nn.Module] = []
        checks.append(run_check("prototype_models", lambda: _prototype_models(sizes, device, models)))
        if models:
            checks.append(run_check("certify_fp32_bf16", lambda: check_certify_fp32_bf16(sizes, device, models)))
            checks.append(run_check("stored_vs_direct", lambda: check_stored_vs_direct(sizes, device, models, work)))
            checks.append(run_check("certify_adaptive", lambda: check_certify_adaptive(sizes, device, models)))
            checks.append(run_check("checkpoint_to_cpu", lambda: check_checkpoint_to_cpu(sizes, device, models, work)))
            for fmt in ("torchscript", "exported"):
                checks.append(run_check(f"{fmt}_model",
                                        lambda fmt=fmt: check_archive_model(fmt, sizes, device, models, work)))
        checks.append(run_check("oom_backoff", lambda: check_oom_backoff(sizes, device)))
        if not args.skip_speed:
            checks.append(run_check("certify_speed", lambda: check_certify_speed(sizes, device)))
            checks.append(run_check("train_speed", lambda: check_train_speed(sizes, device)))
    text = table(checks)
    failed = [c.name for c in checks if c.status == "fail"]
    footer = (f"{len(checks)} checks in {time.perf_counter() - started:.0f}s on {env['device_name']}"
              + (f"; FAILED: {', '.join(failed)}" if failed else "; no failure")
              + ("  (smoke sizes: the figures exercise the code and estimate nothing)" if args.smoke else ""))
    print("\n" + text + "\n" + footer, flush=True)
    (out / "device_check.txt").write_text(text + "\n" + footer + "\n")
    record = {"mode": "smoke" if args.smoke else "full", "environment": env, "sizes": sizes.__dict__,
              "checks": [c.__dict__ for c in checks], "failed": failed}
    (out / "device_check.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"written: {out / 'device_check.json'}, {out / 'device_check.txt'}", flush=True)
    return 1 if failed else 0


def _prototype_models(sizes: Sizes, device: torch.device, into: list[torch.nn.Module]):
    started = time.perf_counter()
    into.extend(trained_models(sizes, device, 3))
    synchronize(device)
    trained = min(3, sizes.prototype_trained)
    return "pass", (f"3 {sizes.arch} members, {trained} trained {sizes.prototype_steps} steps on prototype images, "
                    f"{3 - trained} perturbed copies ({time.perf_counter() - started:.1f}s)"), {}


if __name__ == "__main__":
    sys.exit(main())
