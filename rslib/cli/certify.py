"""``python -m rslib certify DATASET MODEL SIGMA OUT.tsv``: certify one model file on a dataset's
evaluation images with Cohen et al.'s CERTIFY (2019, Sec. 3.2) and write their TSV, one row per
image as soon as it is certified; a rerun with the same arguments continues the file.

Thin over :func:`rslib.certification.certify.run_certification` (``resume=True``),
:func:`rslib.models.released.load_any_model` (the model file of any kind),
:func:`rslib.certification.certify.check_arguments` (the ``OUT.tsv.json`` record of the
arguments), the dataset registry and its preparation (:func:`resolve_dataset`: a registered
dataset, or an ``.npz`` file or a folder of the user's own, through
:func:`rslib.data.registry.evaluation_dataset_info` and
:func:`rslib.data.prepare.prepare_dataset`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rslib.data.registry import DatasetInfo

NAME = "certify"
SUMMARY = "certify a model file on a dataset's test images (Cohen et al.'s CERTIFY), written as their TSV"
DESCRIPTION = """\
Certify MODEL on the evaluation images of DATASET with Cohen et al.'s CERTIFY: for each image,
n0 noisy copies pick the top class, n more bound its probability from below (Clopper-Pearson at
level alpha), and the certified radius is sigma * Phi^-1(that bound), or the model abstains.

OUT.tsv gets Cohen et al.'s columns: idx label predict radius correct time (predict -1 =
abstain; radius unrounded, an L2 distance in [0, 1]-pixel units; time in seconds). Each row is
written as soon as its image is certified. If the run is stopped, run the same command again:
it continues after the last complete row, and the file ends up as an uninterrupted run would
have written it (every image has its own seeded noise). The arguments are recorded in
OUT.tsv.json; a rerun with other arguments is refused (only --count may grow, --batch and
--device may change within the same device type)."""
EPILOG = """\
examples:
  python -m rslib certify digits mynet.pt 0.25 mynet_0.25.tsv --n 10000
  python -m rslib certify my_test.npz mynet.pt 0.25 out.tsv                          # an .npz file of yours
  python -m rslib certify my_images/ model.ts 0.5 out.tsv --image-size 32            # a folder of yours
  python -m rslib certify cifar10 model.ts 0.5 out.tsv                                # a TorchScript file
  python -m rslib certify cifar10 model.pt2 0.5 out.tsv                               # a torch.export file
  python -m rslib certify cifar10 weights.pth 0.5 out.tsv --arch mypkg.nets:wide_resnet \\
      --mean 0.4914 0.4822 0.4465 --std 0.2023 0.1994 0.2010                          # a state dict
  python -m rslib certify cifar10 noise_0.25/checkpoint.pth.tar 0.25 out.tsv --format cohen
  python -m rslib analyze out.tsv                                                      # ACR, certified accuracy

MODEL may be
  an rslib model file (written by the workflow or rslib.models.checkpoint.save_model),
  a TorchScript archive (torch.jit.save of a scripted or traced network; recognised by itself),
  a torch.export archive (.pt2: torch.export.save of the network exported in eval mode with a
      dynamic batch dimension, dynamic_shapes=({0: torch.export.Dim("batch")},); recognised by itself),
  a state dict (torch.save(net.state_dict())) with --arch package.module:function, a function
      called with no arguments that returns the network (importable: installed, or its folder
      on PYTHONPATH),
  a checkpoint of a reference repository with --format cohen|consistency|smoothmix|smoothadv|macer.
A TorchScript, exported or state-dict network gets the [0, 1] pixels plus noise as they are, unless
--input-layer or --mean/--std say which normalisation it expects (the noise is always added to
[0, 1] pixels, never clipped: rslib's and Cohen et al.'s convention).

DATASET may be
  a registered dataset, prepared under --data-dir first if it is not there: digits (built in),
      cifar10, cifar100, mnist, svhn (downloaded), imagenet (IMAGENET_DIR: a folder with train/
      and val/);
  FILE.npz of your own, numpy.savez(FILE, images=..., labels=...): images uint8 N x C x H x W
      (C = 1, grey, or 3, RGB), labels integers 0, 1, ... (class indices of the model); all its
      images are the test images;
  a FOLDER of your own with one sub-folder per class, FOLDER/<class>/<image file> (torchvision's
      ImageFolder layout): the class folders sorted by name are the model's classes 0, 1, ...,
      one folder per class (an empty one for a class without images); images are read grey when
      all are grey, else RGB, and resized (shorter side) and centre-cropped to --image-size
      (default: their own size, when all are square and of one size).
A file or folder of yours is prepared under --data-dir once, as NAME-<its sha256, 12 digits>
(changed images are prepared again). The model must have a class for every label and bring its
own input normalisation (an rslib model file, or --mean/--std): --input-layer normalize|center
and the normalising reference formats take a registered dataset's mean and std."""

#: arguments that may differ when a TSV is continued (they do not change its rows)
MAY_CHANGE = ("model", "count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``certify``, each with its help."""
    from rslib.data.registry import DATASETS
    from rslib.models.formats import INPUT_LAYERS, RELEASED_FORMATS

    parser.add_argument("dataset", metavar="DATASET",
                        help=f"a registered dataset ({', '.join(sorted(DATASETS))}), or an .npz file or a folder of "
                             f"images of your own (see below)")
    parser.add_argument("model", metavar="MODEL", help="the model file (see below)")
    parser.add_argument("sigma", metavar="SIGMA", type=_positive_float,
                        help="noise level: standard deviation of the Gaussian noise added to [0, 1] pixels "
                             "(e.g. 0.25, 0.5, 1.0)")
    parser.add_argument("out", metavar="OUT.tsv", help="the certificate TSV to write (or to continue)")
    subset = parser.add_argument_group("images (default: the dataset's evaluation subset: the first 500 test "
                                       "images, every 100th on imagenet)")
    subset.add_argument("--start", type=_count(0), help="first test index (default 0)")
    subset.add_argument("--stride", type=_count(1), help="certify every STRIDE-th test image (default 1; imagenet 100)")
    subset.add_argument("--count", type=_count(1),
                        help="how many images (default 500, or all there are); a rerun may raise it to continue")
    subset.add_argument("--image-size", type=_count(1), metavar="SIZE",
                        help="a FOLDER's images: the side they are resized (shorter side) and centre-cropped to "
                             "(torchvision's Resize + CenterCrop; default: their own, when all are square and of one "
                             "size)")
    cert = parser.add_argument_group("CERTIFY (defaults: Cohen et al.'s and the paper's)")
    cert.add_argument("--n0", type=_count(1), default=100, help="selection samples per image (default 100)")
    cert.add_argument("--n", type=_count(1), default=100_000, help="estimation samples per image (default 100000)")
    cert.add_argument("--alpha", type=_probability, default=0.001,
                      help="failure probability of each certificate (default 0.001)")
    cert.add_argument("--batch", type=_count(1), default=1000,
                      help="noisy samples per forward pass, rounded down to whole blocks of 100 (default 1000); "
                           "halved automatically when the GPU runs out of memory")
    cert.add_argument("--noise-seed", type=_count(0), default=0,
                      help="seed of the noise; image i's noise depends only on (seed, i) (default 0)")
    cert.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default auto: the GPU if there is one)")
    cert.add_argument("--threads", type=_count(1), default=None,
                      help="CPU threads of torch (default: torch's own choice; 1 is often faster on a busy machine)")
    model = parser.add_argument_group("the model file")
    model.add_argument("--format", choices=RELEASED_FORMATS,
                       help="the file's format when it is not an rslib model file, a TorchScript or a torch.export "
                            "archive")
    model.add_argument("--arch", metavar="PACKAGE.MODULE:FUNCTION",
                       help="for a state dict: the function that returns the network (implies --format state_dict)")
    model.add_argument("--input-layer", choices=INPUT_LAYERS,
                       help="the network's input normalisation on a registered dataset's constants: normalize "
                            "((x - mean) / std), center (x - mean) or none (default for torchscript, exported and "
                            "state_dict; smoothadv files outside their release archive need it)")
    model.add_argument("--mean", type=float, nargs="+", metavar="M",
                       help="per-channel mean of the network's input normalisation (with --std)")
    model.add_argument("--std", type=float, nargs="+", metavar="S", help="per-channel std (with --mean)")
    model.add_argument("--allow-pickle", action="store_true",
                       help="load a checkpoint that also pickles Python objects (runs code from the file: only for "
                            "a source you trust)")
    model.add_argument("--allow-code", action="store_true",
                       help="load an rslib model file whose network is TorchScript, exported or named by a builder "
                            "(runs code: only for a source you trust)")
    parser.add_argument("--data-dir", default="data", help="where datasets are prepared (default ./data)")


@dataclass(frozen=True)
class ResolvedDataset:
    """The ``DATASET`` argument, known but not yet prepared: its registry entry ``info``; for a
    file or folder of the user's own, ``source``, what it is prepared from (the ``settings`` of
    :func:`rslib.data.registry.evaluation_dataset_info`; None for a registered dataset); and
    ``record``, how ``OUT.tsv.json`` names it (the name, or the resolved path and its sha256)."""

    info: DatasetInfo
    source: dict[str, Any] | None
    record: str

    def prepare(self, data_dir: str | os.PathLike) -> Path:
        """Its ``meta.json`` under ``data_dir``, prepared when it is not there or stale
        (:func:`rslib.data.prepare.prepare_dataset`)."""
        from rslib.data.prepare import prepare_dataset

        if self.source is None:
            return prepare_dataset(self.info.name, data_dir)
        return prepare_dataset(self.info.name, data_dir, self.source, evaluation_only=True)


def resolve_dataset(dataset: str, image_size: int | None = None) -> ResolvedDataset:
    """The ``DATASET`` argument: a registered dataset's name, or the path of an ``.npz`` file or
    a folder of class folders of the user's own, read (headers, file names, labels) by
    :func:`rslib.data.registry.evaluation_dataset_info`. A file or folder of the user's own is
    named ``<its name>-<the first 12 hex digits of its sha256>``, the folder under ``--data-dir``
    its prepared copy goes to: changed images are prepared anew, and a resumed TSV refuses them
    (``record``). A folder's sha256 is that of its listing (relative path and sha256 of each
    image file, in :func:`rslib.data.registry.imagefolder_listing`'s order)."""
    from rslib.data.registry import DATASETS, EVALUATION_KEY, dataset_info, imagefolder_listing
    from rslib.runtime.errors import ConfigError, DataError
    from rslib.runtime.io import file_digest

    if dataset in DATASETS:
        if image_size is not None:
            raise ConfigError(f"--image-size applies to a folder of images of your own, not to {dataset}")
        return ResolvedDataset(dataset_info(dataset), None, dataset)
    path = Path(dataset).expanduser()
    if not path.exists():
        if os.sep in dataset or (os.altsep and os.altsep in dataset) or dataset.endswith(".npz"):
            raise DataError(f"DATASET {dataset}: no such file or folder")
        raise DataError(f"DATASET {dataset!r} is neither a registered dataset ({', '.join(sorted(DATASETS))}) nor "
                        f"an .npz file or a folder")
    path = path.resolve()
    if path.is_dir():
        source: dict[str, Any] = {"kind": "imagefolder", "root": str(path)}
        if image_size is not None:
            source["image_size"] = image_size
        listing = hashlib.sha256()
        for image, _ in imagefolder_listing(path, EVALUATION_KEY, allow_empty=True)[1]:
            listing.update(f"{Path(image).relative_to(path).as_posix()}\t{file_digest(image, 'sha256')}\n".encode())
        digest = listing.hexdigest()
    elif path.suffix.lower() == ".npz":
        if image_size is not None:
            raise ConfigError("--image-size applies to a folder of images; the images of an .npz file are certified "
                              "as they are")
        source, digest = {"kind": "npz", "test": str(path)}, file_digest(path, "sha256")
    else:
        raise DataError(f"DATASET {dataset}: expected an .npz file (numpy.savez) or a folder, found another file")
    name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', path.stem) or 'images'}-{digest[:12]}"
    info = dataset_info(name, source, evaluation_only=True)
    record = f"{path} sha256:{digest}"
    if info.user.kind == "imagefolder":
        record += f" image_size:{info.user.image_size}"
    return ResolvedDataset(info, source, record)


def check_model_classes(dataset: str, info: DatasetInfo, model: str, classes: int) -> None:
    """Refuse, in one line, a model of ``classes`` classes on images of the user's own whose labels
    it cannot have predicted: an npz label >= ``classes``, or a folder with another number of
    class folders (the folders sorted by name are the classes 0, 1, ...: with fewer or more
    folders than classes, the labels would shift)."""
    from rslib.runtime.errors import DataError

    if info.user.kind == "npz" and info.num_classes > classes:
        raise DataError(f"DATASET {dataset}: labels run up to {info.num_classes - 1}, but MODEL {model} has "
                        f"{classes} classes (0 .. {classes - 1})")
    if info.user.kind == "imagefolder" and info.num_classes != classes:
        raise DataError(f"DATASET {dataset}: {info.num_classes} class folders, but MODEL {model} has {classes} "
                        f"classes; give one folder per class, in the model's class order by name (an empty one for "
                        f"a class without images)")


def run(args: argparse.Namespace) -> int:
    """Certify ``args.model`` and write (or continue) ``args.out``."""
    from rslib.certification.certify import check_arguments, run_certification
    from rslib.data.load import evaluation_subset
    from rslib.data.registry import EVALUATION_IMAGES, available_evaluation_images, default_evaluation
    from rslib.models.released import load_any_model
    from rslib.runtime.devices import resolve_device
    from rslib.runtime.errors import ConfigError
    from rslib.runtime.io import file_digest

    model_format, options = model_arguments(args)
    dataset = resolve_dataset(args.dataset, args.image_size)
    info = dataset.info
    defaults = default_evaluation(info)
    start = defaults["start"] if args.start is None else args.start
    stride = defaults["stride"] if args.stride is None else args.stride
    available = available_evaluation_images(info.test_images, start, stride)
    if available < 1:
        raise ConfigError(f"--start {start} is past the {info.test_images} test images of {args.dataset}")
    if args.count is not None and args.count > available:
        raise ConfigError(f"--count {args.count}: {args.dataset} has {available} test images from index {start} "
                          f"with stride {stride}")
    count = args.count or min(EVALUATION_IMAGES, available)
    evaluation = {"start": start, "stride": stride, "count": count}
    if not Path(args.model).is_file():
        raise ConfigError(f"MODEL {args.model}: no such file")
    device = resolve_device(args.device)
    if dataset.source is not None:  # images of the user's own: their labels against the model's classes first
        _, spec, _ = load_any_model(args.model, model_format, dataset=info, sigma=args.sigma, **options)
        check_model_classes(args.dataset, info, args.model, spec.num_classes)
    meta = dataset.prepare(args.data_dir)
    indices = evaluation_subset(str(meta), evaluation)
    check_arguments(args.out, {
        "dataset": dataset.record, "model": str(Path(args.model).resolve()),
        "model_sha256": file_digest(args.model, "sha256"),
        "format": model_format, "arch": options["arch"], "input_layer": options["input_layer"],
        "sigma": args.sigma, "start": start, "stride": stride, "count": count, "n0": args.n0, "n": args.n,
        "alpha": args.alpha, "noise_seed": args.noise_seed, "noise_device": device.type,
    }, may_change=MAY_CHANGE)
    run_certification(model_path=args.model, data_meta=meta, dataset=info if dataset.source else info.name,
                      sigma=args.sigma, indices=indices, out_tsv=args.out, n0=args.n0, n=args.n, alpha=args.alpha,
                      batch_size=args.batch, noise_seed=args.noise_seed, device=str(device),
                      model_format=model_format, model_options=options, resume=True, log_every=1,
                      threads=args.threads)
    print(f"wrote {args.out} ({count} images); summarise it with: python -m rslib analyze {args.out}",
          file=sys.stderr)
    return 0


def model_arguments(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """(format, options of :func:`rslib.models.released.load_any_model`) from the model arguments."""
    from rslib.runtime.errors import ConfigError

    model_format = args.format
    if args.arch is not None:
        if model_format not in (None, "state_dict"):
            raise ConfigError(f"--arch names the builder of a state dict; format {model_format} reads its "
                              f"architecture from the file")
        model_format = "state_dict"
    if (args.mean is None) != (args.std is None):
        raise ConfigError("--mean and --std go together: the input normalisation (x - mean) / std")
    if args.mean is not None and args.input_layer is not None:
        raise ConfigError("give --input-layer or --mean/--std, not both")
    input_layer: Any = {"mean": args.mean, "std": args.std} if args.mean is not None else args.input_layer
    return model_format, {"arch": args.arch, "input_layer": input_layer, "allow_pickle": args.allow_pickle,
                          "allow_code": args.allow_code, "entry": "the command line (--allow-pickle)"}


def _positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse
