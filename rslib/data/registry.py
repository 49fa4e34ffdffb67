"""What the workflow knows about each dataset before it is prepared, and which test images it
evaluates on. No torch here: the Snakefile reads this registry when it parses the
configuration (evaluation-subset sizes, shard counts, training-set sizes for the cost estimate).

Two sorts of dataset: the registered ones (:data:`DATASETS`: digits, CIFAR-10, CIFAR-100, MNIST,
SVHN, ImageNet), whose facts are written here, and the user's own, declared in the configuration
(``datasets.<name>.kind: npz`` or ``imagefolder``), whose :class:`DatasetInfo` is built from that
entry and its files by :func:`dataset_info` (reading array headers and file names only), the one
function the plan, the preparation and the jobs call. ``rslib certify`` also takes images of the
user's own to certify only, a file or a folder without a configuration entry
(:func:`evaluation_dataset_info`, through the same :func:`dataset_info` and preparation).
"""

from __future__ import annotations

import operator
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rslib.runtime.errors import DataError

# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    ``mean``/``std`` are per-channel statistics of pixels in [0, 1]; the
    models apply them as their first (normalisation) layer. Both are empty for images that are
    only evaluated on (:func:`evaluation_dataset_info`): no model is built on them.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    format: str = "npz"
    #: size of the training split once prepared (ImageNet: the standard ILSVRC2012 train set);
    #: lets the GPU-hour estimate run before any dataset is downloaded
    train_images: int = 0
    #: size of the test split once prepared (ImageNet: the ILSVRC2012 validation set); the
    #: workflow checks the configured evaluation subset against it before any job runs
    test_images: int = 0
    #: stride of the evaluation subset when none is configured (:func:`default_evaluation`): 1,
    #: or 100 on ImageNet, whose validation folder is sorted by class
    evaluation_stride: int = 1
    #: where a dataset of the user's own lives (None for a registered dataset)
    user: UserFiles | None = None


@dataclass(frozen=True)
class UserFiles:
    """The files of a dataset of the user's own (``datasets.<name>.kind``), as :func:`dataset_info`
    found them: absolute paths of the two npz files (``kind: npz``), or of the ImageFolder split
    folders (``kind: imagefolder``: ``train/`` and ``test/`` or ``val/``) and the side length
    ``image_size`` its images are resized and centre-cropped to. Both are prepared into the npz
    format of the registered datasets (:mod:`rslib.data.prepare`)."""

    kind: str
    train: str
    test: str
    image_size: int = 0

    @property
    def evaluation_only(self) -> bool:
        """Images to evaluate on only (:func:`evaluation_dataset_info`): a test split, no training split."""
        return not self.train


DATASETS: dict[str, DatasetInfo] = {
    # digits mean/std: the train split written by prepare_dataset("digits")
    # (1,297 images, pixels 0..16 mapped to uint8 by round(v*255/16), then
    # divided by 255), mean and population std over all its pixels:
    # 0.305276... and 0.375810..., rounded to 4 decimals.
    # tests/unit/test_data.py recomputes them.
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.3053,), (0.3758,), train_images=1297, test_images=500),
    # CIFAR-10 values as used in Cohen et al.'s randomized-smoothing code.
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), train_images=50000,
        test_images=10000,
    ),
    # CIFAR-100 (torchvision's archive, 100 "fine" labels): the commonly used per-channel mean and
    # (population) standard deviation of its 50,000 training images' [0, 1] pixels, as in e.g.
    # github weiaicunzai/pytorch-cifar100 (conf/global_settings.py: 0.5071, 0.4865, 0.4409 /
    # 0.2673, 0.2564, 0.2762). Not recomputed here: the tests cannot download the dataset.
    "cifar100": DatasetInfo(
        "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), train_images=50000,
        test_images=10000,
    ),
    # MNIST: the mean and standard deviation of its 60,000 training images' [0, 1] pixels that
    # PyTorch's own example uses (github pytorch/examples mnist/main.py: Normalize((0.1307,),
    # (0.3081,))). Not recomputed here: the tests cannot download the dataset.
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), train_images=60000, test_images=10000),
    "svhn": DatasetInfo(
        "svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), train_images=73257,
        test_images=26032,
    ),
    "imagenet": DatasetInfo(
        "imagenet",
        1000,
        (3, 224, 224),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        format="imagefolder",
        train_images=1281167,
        test_images=50000,
        evaluation_stride=100,
    ),
}


#: The keys of a ``datasets.<name>`` entry that declare a dataset of the user's own.
USER_KEYS = ("kind", "train", "test", "root", "classes", "mean", "std", "image_size")
#: What each kind reads its images from (besides ``classes``, ``mean`` and ``std``).
USER_KINDS = {"npz": ("train", "test"), "imagefolder": ("root", "image_size")}
#: torchvision's ImageFolder image extensions (``torchvision.datasets.folder.IMG_EXTENSIONS``,
#: written out because torchvision imports torch; tests/unit/test_user_datasets.py compares them)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def dataset_info(name: str, settings: Mapping[str, Any] | None = None, *,
                 evaluation_only: bool = False) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``, or :class:`DataError` (one line).

    ``settings`` is the configuration's ``datasets.<name>`` entry (or just its keys of
    :data:`USER_KEYS`, as :func:`dataset_source` gives them): a registered name takes none of
    those keys, any other name is a dataset of the user's own and needs ``kind``
    (:func:`user_dataset_info`). ``evaluation_only``: ``settings`` describe images to certify
    only, no configuration entry (:func:`evaluation_dataset_info`; ``rslib certify``)."""
    if isinstance(name, str) and name in DATASETS:
        given = [key for key in USER_KEYS if key in (settings or {})]
        if given:
            raise DataError(f"datasets.{name}.{given[0]}: {name} is a registered dataset (its classes, mean and std "
                            f"are in rslib/data/registry.py); give a dataset of your own another name")
        return DATASETS[name]
    known = ", ".join(sorted(DATASETS))
    if settings is None:
        raise DataError(f"unknown dataset {name!r}; known: {known}")
    if evaluation_only:
        return evaluation_dataset_info(name, settings)
    if "kind" not in settings:
        raise DataError(f"datasets.{name}: {name!r} is not a registered dataset ({known}); a dataset of your own "
                        f"needs kind: npz or imagefolder")
    return user_dataset_info(name, settings)


def dataset_source(name: str, settings: Mapping[str, Any]) -> Any:
    """What the data rule prepares ``name`` from (its ``source`` param): a registered dataset's
    ``source`` (mirrors, ImageNet's root), a dataset of the user's own's keys of :data:`USER_KEYS`
    (a change to any of them prepares it again)."""
    if name in DATASETS:
        return settings.get("source", {})
    return {key: settings[key] for key in USER_KEYS if key in settings}


def user_dataset_info(name: str, settings: Mapping[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset of the user's own, from its configuration entry and
    what its files say without being loaded: the npz arrays' headers (shape and dtype), or an
    ImageFolder tree's file names. Every problem is a :class:`DataError` naming the key.

    ``kind: npz``: ``train`` and ``test`` are ``.npz`` files (``numpy.savez``) holding ``images``,
    uint8 N x C x H x W (the layout of our prepared files), and ``labels``, integers 0 ..
    ``classes`` - 1. ``kind: imagefolder``: ``root`` holds ``train/`` and ``test/`` (or
    ``val/``), one sub-folder per class as torchvision's ImageFolder reads them; images become
    C x ``image_size`` x ``image_size``. Both need ``classes``, and ``mean`` and ``std`` (one
    value per channel, of [0, 1] pixels): the model's first layer normalises with them.
    """
    where = f"datasets.{name}"
    kind = settings.get("kind")
    if kind not in USER_KINDS:
        raise DataError(f"{where}.kind: expected npz or imagefolder, got {kind!r}")
    reads = USER_KINDS[kind]
    for key in USER_KEYS[1:]:
        if key in settings and key not in reads + ("classes", "mean", "std"):
            raise DataError(f"{where}.{key}: kind {kind} reads {' and '.join(reads)}, not {key}")
    if settings.get("source"):
        raise DataError(f"{where}.source: a dataset of your own is read from {' and '.join(reads)}; it takes no source")
    if "mean" not in settings or "std" not in settings:
        raise DataError(f"{where}: mean and std are required for a dataset of your own (per channel, of its [0, 1] "
                        f"pixels): the model's first layer normalises its input with them")
    if "classes" not in settings:
        raise DataError(f"{where}: classes is required for a dataset of your own: the number of classes (labels 0 .. "
                        f"classes - 1)")
    for key in reads:
        if key not in settings:
            raise DataError(f"{where}: kind {kind} needs {' and '.join(reads)}; {key} is missing")
    classes = _count(settings["classes"], f"{where}.classes", 2)
    mean, std = _channel_values(settings["mean"], f"{where}.mean"), _channel_values(settings["std"], f"{where}.std")
    if len(mean) != len(std):
        raise DataError(f"{where}: mean has {len(mean)} values but std has {len(std)}; give one per channel")
    if any(not 0 <= m <= 1 for m in mean) or any(s <= 0 for s in std):
        raise DataError(f"{where}: mean must lie in [0, 1] and std be > 0 (statistics of [0, 1] pixels), "
                        f"got mean {list(mean)}, std {list(std)}")
    if kind == "npz":
        shapes = {split: _npz_shape(Path(settings[split]).expanduser(), f"{where}.{split}", len(mean),
                                    "one channel per mean value") for split in
                  ("train", "test")}
        if shapes["train"][1:] != shapes["test"][1:]:
            raise DataError(f"{where}: train images are {'x'.join(map(str, shapes['train'][1:]))} but test images "
                            f"{'x'.join(map(str, shapes['test'][1:]))}; both splits need one C x H x W")
        files = UserFiles("npz", *(str(Path(settings[s]).expanduser().resolve()) for s in ("train", "test")))
        image_shape, n_train, n_test = shapes["train"][1:], shapes["train"][0], shapes["test"][0]
    else:
        if len(mean) not in (1, 3):
            raise DataError(f"{where}.mean: {len(mean)} values, but an imagefolder dataset is grey (1 channel) or RGB "
                            f"(3 channels)")
        size = _count(settings["image_size"], f"{where}.image_size", 1)
        train, test = imagefolder_splits(settings["root"], where)
        train_classes, train_files = imagefolder_listing(train, f"{where}.root")
        test_classes, test_files = imagefolder_listing(test, f"{where}.root", allow_empty=True)
        if len(train_classes) != classes:
            raise DataError(f"{where}.classes: {classes}, but {train} has {len(train_classes)} class folders "
                            f"({', '.join(train_classes[:5])}{', ...' if len(train_classes) > 5 else ''})")
        extra = sorted(set(test_classes) - set(train_classes))
        if extra:
            raise DataError(f"{where}.root: {test} has class folders that {train} lacks: {extra[:5]}")
        files = UserFiles("imagefolder", str(train), str(test), size)
        image_shape, n_train, n_test = (len(mean), size, size), len(train_files), len(test_files)
    return DatasetInfo(name, classes, tuple(image_shape), mean, std, train_images=n_train, test_images=n_test,
                       user=files)


def _count(value: object, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _channel_values(value: object, key: str) -> tuple[float, ...]:
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DataError(f"{key}: expected a list of numbers, one per channel, got {value!r}")
    return tuple(float(v) for v in value)


def _npz_shape(path: Path, key: str, channels: tuple[int, ...] | int, why: str) -> tuple[int, int, int, int]:
    """N x C x H x W of the ``images`` of an npz file, from the array headers alone (nothing is
    loaded), after checking the layout: ``images`` uint8 N x C x H x W with C = ``channels`` (one
    of them; ``why`` says why, in the message), ``labels`` integers of length N."""
    import numpy as np

    headers = {}
    try:
        with zipfile.ZipFile(path) as npz:
            names = npz.namelist()
            for array in ("images", "labels"):
                if f"{array}.npy" not in names:
                    found = sorted(n.removesuffix(".npy") for n in names)
                    raise DataError(f"{key}: {path} holds no '{array}' array (found {found}); expected images "
                                    f"(uint8 N x C x H x W) and labels (integers, length N)")
                with npz.open(f"{array}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                    if version not in read:
                        raise DataError(f"{key}: {path}: {array} is a version {version} .npy array; save it with "
                                        f"numpy.savez")
                    shape, _, dtype = read[version](f)
                    headers[array] = (tuple(shape), dtype)
    except FileNotFoundError:
        raise DataError(f"{key}: {path} not found") from None
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise DataError(f"{key}: {path} is not a readable .npz file (numpy.savez): {e}") from None
    except OSError as e:
        raise DataError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    (shape, dtype), (label_shape, label_dtype) = headers["images"], headers["labels"]
    allowed = (channels,) if isinstance(channels, int) else channels
    if dtype != np.uint8:
        raise DataError(f"{key}: images in {path} are {dtype}; expected uint8 pixels 0..255")
    if len(shape) != 4 or shape[1] not in allowed:
        hint = ""
        if len(shape) == 4 and shape[3] in allowed:
            hint = " (channels last: store images.transpose(0, 3, 1, 2))"
        elif len(shape) == 3 and 1 in allowed:
            hint = " (grey N x H x W: store images[:, None])"
        raise DataError(f"{key}: images in {path} have shape {shape}; expected N x C x H x W with C = "
                        f"{' or '.join(map(str, allowed))} ({why}){hint}")
    if label_dtype.kind not in "iu" or label_shape != shape[:1]:
        raise DataError(f"{key}: labels in {path} are {label_dtype} of shape {label_shape}; expected integers of "
                        f"shape ({shape[0]},), one per image")
    return shape


def imagefolder_splits(root: object, where: str) -> tuple[Path, Path]:
    """The ``train/`` and evaluation (``test/``, else ``val/``) folders of an ImageFolder tree."""
    path = Path(str(root)).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{where}.root: {path} is not a folder")
    test = [path / s for s in ("test", "val") if (path / s).is_dir()]
    if not (path / "train").is_dir() or not test:
        raise DataError(f"{where}.root: {path} needs train/ and test/ (or val/), one sub-folder per class")
    if len(test) == 2:
        raise DataError(f"{where}.root: {path} has both test/ and val/; keep the one to evaluate on")
    return path / "train", test[0]


def imagefolder_listing(folder: Path, key: str, allow_empty: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """(class names, [(image path, class name)]) of one ImageFolder split, listed as torchvision's
    ``ImageFolder`` lists it (``find_classes``, ``make_dataset``): class folders sorted by name,
    images (:data:`IMG_EXTENSIONS`, any case) found recursively, symbolic links followed, in sorted
    order. File names only: nothing is opened. A training class folder without images is refused,
    as torchvision refuses it; a test class may have none. Messages start with ``key``."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise DataError(f"{key}: {folder} has no class folders (one sub-folder per class)")
    files = []
    for name in classes:
        found = [os.path.join(base, f) for base, _, names in sorted(os.walk(folder / name, followlinks=True))
                 for f in sorted(names) if f.lower().endswith(IMG_EXTENSIONS)]
        if not found and not allow_empty:
            raise DataError(f"{key}: class folder {folder / name} holds no image ({', '.join(IMG_EXTENSIONS)})")
        files += [(path, name) for path in found]
    return classes, files


#: How messages name images to certify only (:func:`evaluation_dataset_info`): the argument of ``rslib certify``.
EVALUATION_KEY = "DATASET"
#: Pillow's band names of grey images (modes 1, L, LA, I, I;16, F): they become one channel.
GREY_BANDS = frozenset({"1", "L", "A", "I", "F"})


def evaluation_dataset_info(name: str, settings: Mapping[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` of images of the user's own that are only certified, with no
    configuration entry (``rslib certify FILE.npz`` or ``FOLDER``): a test split and no training
    split. ``settings``: ``kind: npz`` with ``test``, a file in the layout of
    :func:`user_dataset_info`; or ``kind: imagefolder`` with ``root``, a folder of class folders
    (``root/<class>/…``: one split of :func:`user_dataset_info`'s tree), and ``image_size``
    (optional).

    What a configuration entry states is read from the files: the channels (npz: C, 1 or 3;
    imagefolder: 1 when every image is grey, else 3, from the images' headers), the side
    ``image_size`` when none is given (the images' own, when all are square and of one size),
    and the classes: npz, labels 0 .. the largest (the labels array is read), which the model
    must have at least; imagefolder, one per class folder, sorted by name as torchvision's
    ``ImageFolder`` sorts them, which the model must have exactly (``rslib.cli.certify`` checks
    both). ``mean`` and ``std`` are empty rather than made up: no model is built on these
    images, the model to certify brings its own input layer. Messages name
    :data:`EVALUATION_KEY`."""
    key, kind = EVALUATION_KEY, settings.get("kind")
    if kind == "npz":
        path = Path(settings["test"]).expanduser().resolve()
        shape = _npz_shape(path, key, (1, 3), "grey or RGB")
        if shape[0] == 0:
            raise DataError(f"{key}: {path} holds no images")
        classes = _npz_label_classes(path, key)
        files, image_shape, n_test = UserFiles("npz", "", str(path)), shape[1:], shape[0]
    elif kind == "imagefolder":
        root = Path(settings["root"]).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{key}: {root} is not a folder")
        names, images = imagefolder_listing(root, key, allow_empty=True)
        evaluated = [split for split in ("test", "val") if split in names]
        if "train" in names and evaluated:  # a configuration's kind: imagefolder tree, not class folders
            raise DataError(f"{key}: {root} holds train/ and {evaluated[0]}/, a tree of splits; give the folder of "
                            f"the images to certify, one sub-folder per class (e.g. {root / evaluated[0]})")
        if not images:
            raise DataError(f"{key}: {root} holds no image ({', '.join(IMG_EXTENSIONS)}) in its class folders "
                            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        channels, sizes = _image_headers(images, key)
        if settings.get("image_size") is not None:
            size = _count(settings["image_size"], f"{key} image size", 1)
        elif len(sizes) == 1 and len(set(next(iter(sizes)))) == 1:
            size = next(iter(sizes))[0]
        else:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3]) + (", ..." if len(sizes) > 3 else "")
            raise DataError(f"{key}: the images of {root} are not all square and of one size ({shown}); give "
                            f"--image-size, the side they are resized and centre-cropped to")
        files = UserFiles("imagefolder", "", str(root), size)
        classes, image_shape, n_test = len(names), (channels, size, size), len(images)
    else:
        raise DataError(f"{key}: kind {kind!r}: expected npz or imagefolder")
    return DatasetInfo(name, classes, tuple(image_shape), (), (), train_images=0, test_images=n_test, user=files)


def _npz_label_classes(path: Path, key: str) -> int:
    """1 + the largest label of an npz file (its ``labels`` array is read, the images are not),
    after checking that no label is negative."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            labels = npz["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{key}: cannot read the labels of {path}: {e}") from None
    if labels.min() < 0:
        raise DataError(f"{key}: labels in {path} run from {labels.min()} to {labels.max()}; expected class indices "
                        f"0, 1, ...")
    return int(labels.max()) + 1


def _image_headers(files: list[tuple[str, str]], key: str) -> tuple[int, set[tuple[int, int]]]:
    """(channels, the set of (width, height)) of image files, from their headers (Pillow opens a
    file lazily: the pixels are not decoded): 1 channel when every image is grey
    (:data:`GREY_BANDS`), else 3 (RGB, as torchvision's ``ImageFolder`` loads them)."""
    from PIL import Image

    grey, sizes = True, set()
    for path, _ in files:
        try:
            with Image.open(path) as image:
                grey = grey and set(image.getbands()) <= GREY_BANDS
                sizes.add(image.size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            raise DataError(f"{key}: cannot read image {path}: {e}") from None
    return (1 if grey else 3), sizes


#: images of the evaluation subset when none is configured: 000 Tables 5-7 ("the first 500 test images")
EVALUATION_IMAGES = 500


def default_evaluation(dataset: str | DatasetInfo) -> dict[str, int]:
    """The evaluation subset of a dataset (a registered name, or the :class:`DatasetInfo` of one of
    the user's own) when none is configured (``rslib certify``): :data:`EVALUATION_IMAGES` test
    images from the first, every ``evaluation_stride``-th (the paper's rule, that ``config.yaml``
    writes out: the first 500 on CIFAR-10, SVHN and digits, every 100th of ImageNet's 50,000),
    fewer when the split is smaller."""
    info = dataset if isinstance(dataset, DatasetInfo) else dataset_info(dataset)
    stride = info.evaluation_stride
    return {"start": 0, "stride": stride,
            "count": min(EVALUATION_IMAGES, available_evaluation_images(info.test_images, 0, stride))}


def _index(value: object, name: str, minimum: int) -> int:
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"evaluation {name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise DataError(f"evaluation {name} must be an integer >= {minimum}, got {value!r}")
    return v


def available_evaluation_images(n_test: int, start: int, stride: int) -> int:
    """How many test indices ``start, start + stride, …`` a split of ``n_test`` images has."""
    return max(0, -(-(n_test - start) // stride))


def evaluation_indices(n_test: int, start: int, stride: int, count: int) -> list[int]:
    """The fixed evaluation subset: ``count`` test indices ``start, start + stride, …``.

    The paper evaluates on "the first 500 test images of Cifar-10" (``000`` Tables 5–7:
    start 0, stride 1, count 500), and so on SVHN; ImageNet's validation folder is sorted by
    class, so there Cohen et al.'s every 100th image (stride 100) is used. A split too small for
    ``count`` images is refused rather than silently evaluating fewer.
    """
    start, stride, count = _index(start, "start", 0), _index(stride, "stride", 1), _index(count, "count", 1)
    if n_test < 0:
        raise DataError(f"n_test must be >= 0, got {n_test!r}")
    available = available_evaluation_images(n_test, start, stride)
    if count > available:
        raise DataError(
            f"evaluation subset needs {count} test images (start {start}, stride {stride}) but the test split "
            f"of {n_test} images has only {available}: lower evaluation.count"
        )
    return list(range(start, start + stride * count, stride))
