"""``python -m rslib certify DATASET MODEL SIGMA OUT.tsv``: certify one model file on a dataset's
evaluation images with Cohen et al.'s CERTIFY (2019, Sec. 3.2) and write their TSV, one row per
image as soon as it is certified; a rerun with the same arguments continues the file.

Thin over :func:`rslib.certification.certify.run_certification` (``resume=True``),
:func:`rslib.models.released.load_any_model` (the model file of any kind),
:func:`rslib.certification.certify.check_arguments` (the ``OUT.tsv.json`` record of the
arguments) and the dataset registry (:func:`resolve_dataset`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

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
  python -m rslib certify cifar10 model.ts 0.5 out.tsv                                # a TorchScript file
  python -m rslib certify cifar10 weights.pth 0.5 out.tsv --arch mypkg.nets:wide_resnet \\
      --mean 0.4914 0.4822 0.4465 --std 0.2023 0.1994 0.2010                          # a state dict
  python -m rslib certify cifar10 noise_0.25/checkpoint.pth.tar 0.25 out.tsv --format cohen
  python -m rslib analyze out.tsv                                                      # ACR, certified accuracy

MODEL may be
  an rslib model file (written by the workflow or rslib.models.checkpoint.save_model),
  a TorchScript archive (torch.jit.save of a scripted or traced network; recognised by itself),
  a state dict (torch.save(net.state_dict())) with --arch package.module:function, a function
      called with no arguments that returns the network (importable: installed, or its folder
      on PYTHONPATH),
  a checkpoint of a reference repository with --format cohen|consistency|smoothmix|smoothadv|macer.
A TorchScript or state-dict network gets the [0, 1] pixels plus noise as they are, unless
--input-layer or --mean/--std say which normalisation it expects (the noise is always added to
[0, 1] pixels, never clipped: rslib's and Cohen et al.'s convention).

The dataset is prepared under --data-dir first if it is not there (digits is built in; cifar10
and svhn are downloaded; imagenet needs IMAGENET_DIR, a folder with train/ and val/)."""

#: arguments that may differ when a TSV is continued (they do not change its rows)
MAY_CHANGE = ("model", "count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``certify``, each with its help."""
    from rslib.models.formats import INPUT_LAYERS, RELEASED_FORMATS

    parser.add_argument("dataset", metavar="DATASET",
                        help="a registered dataset: digits, cifar10, svhn, imagenet (a folder or .npz file of your "
                             "own: not yet)")
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
    model = parser.add_argument_group("the model file")
    model.add_argument("--format", choices=RELEASED_FORMATS,
                       help="the file's format when it is not an rslib model file or a TorchScript archive")
    model.add_argument("--arch", metavar="PACKAGE.MODULE:FUNCTION",
                       help="for a state dict: the function that returns the network (implies --format state_dict)")
    model.add_argument("--input-layer", choices=INPUT_LAYERS,
                       help="the network's input normalisation on the dataset's constants: normalize "
                            "((x - mean) / std), center (x - mean) or none (default for torchscript and state_dict; "
                            "smoothadv files outside their release archive need it)")
    model.add_argument("--mean", type=float, nargs="+", metavar="M",
                       help="per-channel mean of the network's input normalisation (with --std)")
    model.add_argument("--std", type=float, nargs="+", metavar="S", help="per-channel std (with --mean)")
    model.add_argument("--allow-pickle", action="store_true",
                       help="load a checkpoint that also pickles Python objects (runs code from the file: only for "
                            "a source you trust)")
    model.add_argument("--allow-code", action="store_true",
                       help="load an rslib model file whose network is TorchScript or named by a builder (runs "
                            "code: only for a source you trust)")
    parser.add_argument("--data-dir", default="data", help="where datasets are prepared (default ./data)")


def resolve_dataset(dataset: str, data_dir: str | os.PathLike) -> tuple[str, Path]:
    """(registered name, prepared ``meta.json``) of the ``DATASET`` argument, preparing it under
    ``data_dir`` when needed (:func:`rslib.data.prepare.prepare_dataset`). A path (a folder or an
    ``.npz`` file of the user's own) is refused with one line for now: this is where it will be
    registered once the dataset registry takes such datasets."""
    from rslib.data.prepare import prepare_dataset
    from rslib.data.registry import DATASETS, dataset_info
    from rslib.runtime.errors import DataError

    if dataset not in DATASETS and (os.sep in dataset or dataset.endswith(".npz") or Path(dataset).exists()):
        raise DataError(f"DATASET {dataset!r} is a path: datasets of your own (a folder or .npz file) are not "
                        f"supported yet; give a registered dataset: {', '.join(sorted(DATASETS))}")
    dataset_info(dataset)  # unknown names: one line listing the known ones
    return dataset, prepare_dataset(dataset, data_dir)


def run(args: argparse.Namespace) -> int:
    """Certify ``args.model`` and write (or continue) ``args.out``."""
    from rslib.certification.certify import check_arguments, run_certification
    from rslib.data.load import evaluation_subset
    from rslib.data.registry import EVALUATION_IMAGES, available_evaluation_images, default_evaluation, dataset_info
    from rslib.runtime.devices import resolve_device
    from rslib.runtime.errors import ConfigError
    from rslib.runtime.io import file_digest

    model_format, options = model_arguments(args)
    name, meta = resolve_dataset(args.dataset, args.data_dir)
    defaults = default_evaluation(name)
    start = defaults["start"] if args.start is None else args.start
    stride = defaults["stride"] if args.stride is None else args.stride
    count = args.count or min(EVALUATION_IMAGES,
                              available_evaluation_images(dataset_info(name).test_images, start, stride))
    if count < 1:
        raise ConfigError(f"--start {start} is past the {dataset_info(name).test_images} test images of {name}")
    evaluation = {"start": start, "stride": stride, "count": count}
    indices = evaluation_subset(str(meta), evaluation)
    if not Path(args.model).is_file():
        raise ConfigError(f"MODEL {args.model}: no such file")
    device = resolve_device(args.device)
    check_arguments(args.out, {
        "dataset": name, "model": str(Path(args.model).resolve()), "model_sha256": file_digest(args.model, "sha256"),
        "format": model_format, "arch": options["arch"], "input_layer": options["input_layer"],
        "sigma": args.sigma, "start": start, "stride": stride, "count": count, "n0": args.n0, "n": args.n,
        "alpha": args.alpha, "noise_seed": args.noise_seed, "noise_device": device.type,
    }, may_change=MAY_CHANGE)
    run_certification(model_path=args.model, data_meta=meta, dataset=name, sigma=args.sigma, indices=indices,
                      out_tsv=args.out, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch,
                      noise_seed=args.noise_seed, device=str(device), model_format=model_format,
                      model_options=options, resume=True, log_every=1)
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
