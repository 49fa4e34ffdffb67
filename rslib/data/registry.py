"""What the workflow knows about each dataset before it is downloaded, and which test images it
evaluates on. No torch here: the Snakefile reads this registry when it parses the
configuration (evaluation-subset sizes, shard counts, training-set sizes for the cost estimate).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from rslib.runtime.errors import DataError

# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    ``mean``/``std`` are per-channel statistics of pixels in [0, 1]; the
    models apply them as their first (normalisation) layer.
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


def dataset_info(name: str) -> DatasetInfo:
    """Return the registry entry for ``name`` or raise :class:`DataError`."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; known: {known}") from None


#: images of the evaluation subset when none is configured: 000 Tables 5-7 ("the first 500 test images")
EVALUATION_IMAGES = 500


def default_evaluation(name: str) -> dict[str, int]:
    """The evaluation subset of dataset ``name`` when none is configured (``rslib certify``):
    :data:`EVALUATION_IMAGES` test images from the first, every ``evaluation_stride``-th (the
    paper's rule, that ``config.yaml`` writes out: the first 500 on CIFAR-10, SVHN and digits,
    every 100th of ImageNet's 50,000), fewer when the split is smaller."""
    info = dataset_info(name)
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
