"""One training job, as the workflow's ``train`` rule runs it: the method by name
(:data:`METHODS`), the data with its held-out images, the shared loop with its resumable state,
training curves, and a model file with its provenance."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from rslib.runtime.devices import resolve_device
from rslib.training.advmacer import AdvMacer
from rslib.training.base import TrainingMethod
from rslib.training.consistency import Consistency
from rslib.training.gaussian import Gaussian
from rslib.training.macer import Macer
from rslib.training.smoothadv import SmoothAdv
from rslib.training.smoothmix import SmoothMix

#: The paper's methods by the name used in config and in the ``method`` wildcard.
METHODS: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (Gaussian, SmoothAdv, Macer, AdvMacer, Consistency, SmoothMix)
}


def get_method(name: str, module: str | None = None) -> type[TrainingMethod]:
    """The class of method ``name``: one of :data:`METHODS`, or with ``module``
    (``methods.<name>.module``: ``package.module[:ClassName]``) a method of the user's own
    (:func:`rslib.training.user_methods.load_method_class`)."""
    from rslib.runtime.errors import ConfigError
    from rslib.training.user_methods import load_method_class

    if module is not None:
        return load_method_class(module, f"methods.{name}.module")
    if name not in METHODS:
        raise ConfigError(f"unknown training method {name!r}; known: {', '.join(sorted(METHODS))} "
                          f"(a method of your own names its class: methods.{name}.module)")
    return METHODS[name]


def run_training(
    *,
    data_meta: str | os.PathLike,
    out_model: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    dataset: str,
    arch: str,
    method: str,
    sigma: float,
    seed: int,
    hparams: dict[str, Any],
    method_module: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 4,
    curve: dict[str, Any] | None = None,
    out_curve: str | os.PathLike | None = None,
    eval_indices: list[int] | None = None,
    heldout_images: int = 0,
    dataset_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model and save it (with spec, history, timing and provenance) to ``out_model``.

    Resumable: rerunning after an interruption continues from ``checkpoint_dir`` when the
    state there was saved for the same model spec, curve settings, curve images and held-out
    split (the resume key); otherwise training starts afresh.
    With ``curve`` (see :class:`rslib.training.curves.CurveConfig`), an ACR estimate on the
    first images of ``eval_indices`` is recorded periodically and written to ``out_curve``.
    ``heldout_images`` training images (:func:`rslib.data.load.heldout_split`) are left out of
    training, for the ensemble weights fitted on held-out data. ``dataset_settings`` is the
    configuration's ``datasets.<dataset>`` entry, which a dataset of the user's own is read from
    (:func:`rslib.data.registry.dataset_info`); ``method_module`` (``methods.<method>.module``)
    names the class of a method of the user's own; the SHA-256 of the file defining that class
    belongs to the resume key and is saved with the model (``extra["method_source"]``).
    Returns the ``extra`` record saved with the model.
    """
    from rslib.certification.noise import mix_seed
    from rslib.data.load import TensorImageDataset, heldout_split, load_split
    from rslib.data.registry import dataset_info
    from rslib.models.checkpoint import ModelSpec, save_model
    from rslib.runtime import provenance
    from rslib.runtime.versions import STAGE_VERSIONS
    from rslib.training.curves import CurveConfig, curve_hook, curve_images, write_curve
    from rslib.training.hparams import check_hparam_keys
    from rslib.training.loop import (
        InMemoryBatches,
        LoaderBatches,
        OptimConfig,
        train_loop,
    )
    from rslib.training.user_methods import source_digest

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    info = dataset_info(dataset, dataset_settings)
    method_cls = get_method(method, method_module)
    check_hparam_keys(method, hparams, f"hparams of {method}", method_cls.hparam_keys)
    optim = OptimConfig.from_hparams(hparams)
    spec = ModelSpec(
        arch=arch, dataset=dataset, num_classes=info.num_classes, in_channels=info.image_shape[0],
        mean=tuple(info.mean), std=tuple(info.std), sigma=float(sigma), method=method, seed=int(seed),
        hparams=dict(hparams),
    )
    curve_config = CurveConfig.from_dict(curve)
    if curve_config is not None and eval_indices is None:
        raise ValueError("training curves need the evaluation subset (eval_indices)")
    # The saved state carries the curve's history (ACR on the curve's images), so the images
    # belong to the resume key: other images start afresh instead of resuming an old curve.
    key: dict[str, Any] = {"spec": spec.__dict__, "curve": curve, "heldout": heldout_images,
                           "train_version": STAGE_VERSIONS["train"]}
    method_source = None
    if method_module is not None:
        # an edited loss must not resume (or return) the state the old one trained
        method_source = {"module": method_module, "sha256": source_digest(method_cls)}
        key["method_source"] = method_source["sha256"]
    if curve_config is not None:
        key["curve_images"] = curve_images(curve_config, eval_indices)
    run_key = provenance.config_hash(key)
    torch.manual_seed(mix_seed(seed, 103))
    model = spec.build().to(dev)
    train_set = load_split(data_meta, "train")
    if heldout_images:
        kept, _ = heldout_split(len(train_set), heldout_images)
        if hasattr(train_set, "images"):
            train_set = TensorImageDataset(train_set.images[kept], train_set.labels[kept], train_set.num_classes)
        else:
            train_set = torch.utils.data.Subset(train_set, kept)
    if hasattr(train_set, "images"):
        batches = InMemoryBatches(train_set.images, train_set.labels, optim.batch_size, seed, dev)
    else:
        batches = LoaderBatches(train_set, optim.batch_size, seed, dev, workers)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    log(
        f"training {method} {arch} on {dataset} at sigma={sigma:g}, seed {seed}: {optim.epochs} epochs x "
        f"{batches.steps_per_epoch} steps of {optim.batch_size} on {dev}"
    )
    hook = None
    if curve_config is not None:
        hook = curve_hook(
            curve_config, load_split(data_meta, "test"), eval_indices, sigma=float(sigma),
            num_classes=info.num_classes, device=dev, total_epochs=optim.epochs, log=log,
        )
    state = train_loop(
        model, method_cls(sigma, hparams), batches, optim, seed=int(seed), checkpoint_dir=checkpoint_dir,
        run_key=run_key, augment=hparams.get("augment"), log=log, on_epoch_end=hook,
    )
    extra = {
        "train_seconds": state.seconds,
        "heldout_images": int(heldout_images),
        "history": state.history,
        "provenance": provenance.collect(dev, {"spec": spec.__dict__}),
    }
    if method_source is not None:
        extra["method_source"] = method_source
    if out_curve is not None:
        write_curve(state.history, out_curve)
    save_model(out_model, model, spec, extra)
    log(f"saved {out_model} after {state.seconds:.1f}s of training")
    return extra
