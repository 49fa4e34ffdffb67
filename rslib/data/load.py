"""Prepared dataset splits as torch datasets, the fixed evaluation subset, and the held-out
training images of the fitted ensemble weights."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rslib.data.registry import (
    evaluation_indices,
)
from rslib.runtime.errors import DataError
from rslib.runtime.io import file_digest


def evaluation_subset(meta_path: str, evaluation: Mapping[str, int]) -> list[int]:
    """The dataset's fixed evaluation indices (same for every method and ensemble):
    ``evaluation`` is the configuration's ``datasets.<name>.evaluation`` (start, stride, count).
    The plan checked the count against the test split's size before any job ran; a split that
    has shrunk since (a user's files replaced) is refused here, naming the key."""

    meta = json.loads(Path(meta_path).read_text())
    try:
        return evaluation_indices(int(meta["n_test"]), evaluation["start"], evaluation["stride"], evaluation["count"])
    except DataError as e:
        raise DataError(f"datasets.{meta.get('name')}.evaluation: {e}") from None


SPLITS = ("train", "test")


def _imagenet_missing(root: str) -> DataError:
    """The error raised when no usable ImageNet folder is configured (torchvision has no
    ImageNet download: ILSVRC2012 needs the user's own licence)."""
    return DataError(
        f"ImageNet folder not found: '{root}'. Download ILSVRC2012 yourself and set "
        "datasets.imagenet.source.root in the config (or IMAGENET_DIR, when that is empty) to a folder holding "
        "train/ and val/ in ImageFolder layout (one sub-folder per class)."
    )


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _read_meta(meta_path: Path) -> dict:
    """Parse meta.json (our format's marker) or raise :class:`DataError`."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{meta_path} not found; run the data rule (prepare_dataset) first"
        ) from None
    except (OSError, ValueError) as e:
        raise DataError(f"unreadable {meta_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") not in ("npz", "imagefolder"):
        raise DataError(f"{meta_path} is not a dataset meta.json (no valid 'format')")
    return meta


class TensorImageDataset(Dataset):
    """In-memory image dataset: uint8 N x C x H x W images and int64 labels.

    ``dataset[i]`` is ``(float32 C x H x W in [0, 1], int label)``. Ours because it holds our
    format as tensors (torchvision's datasets convert each image to PIL and back).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise DataError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].to(torch.float32).div_(255.0), int(self.labels[index])


def _imagefolder_split(meta: dict, split: str) -> Dataset:
    """torchvision ImageFolder over ``root/train`` or ``root/val`` (pixels in [0, 1]); ours is the
    choice of the standard crops and the error when the recorded folder has gone."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if split == "train":
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    transform = transforms.Compose([*steps, transforms.ToTensor()])
    folder = Path(meta["root"]) / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise _imagenet_missing(str(meta["root"]))
    dataset = ImageFolder(str(folder), transform=transform)
    dataset.num_classes = len(dataset.classes)
    return dataset


def load_split(meta_path: str | Path, split: str) -> Dataset:
    """Load the ``"train"`` or ``"test"`` split of a prepared dataset.

    npz datasets give a :class:`TensorImageDataset` (the file's sha256 is
    checked against meta.json first); ImageNet gives a torchvision
    ``ImageFolder`` (``"test"`` is the ``val/`` folder) with standard
    augmentation/cropping and no normalisation. Ours: it reads our format.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    meta_path = Path(meta_path)
    meta = _read_meta(meta_path)
    if meta["format"] == "imagefolder":
        return _imagefolder_split(meta, split)
    path = meta_path.parent / f"{split}.npz"
    expected = (meta.get("files") or {}).get(path.name)
    if not path.is_file():
        raise DataError(f"{path} is missing; delete the folder and re-run the data rule")
    if expected is None or file_digest(path, "sha256") != expected:
        raise DataError(
            f"{path} does not match meta.json (corrupt or modified); "
            "delete the folder and re-run the data rule"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"unreadable {path}: {e}") from None
    return TensorImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), meta["num_classes"]
    )


def heldout_split(n_train: int, heldout: int) -> tuple[list[int], list[int]]:
    """Split training indices into (train, held-out): the held-out images are the last
    ``heldout`` of the training split, in index order.

    That is SWEEN's rule (github SWEEN-author/SWEEN: ``ens_train.py`` fits the weights on the
    last ``val_num`` = 2,000 training images, ``cand_train.py`` trains the members on the
    others; ``002`` App. C.1). The held-out images are never trained on; the weights fitted on
    them (SWEEN's and the sound "global" EsbRS weights) never see the test set. On CIFAR-10 and
    SVHN (torchvision's order) the last images are a mix of all classes; an ImageNet folder is
    sorted by class, so there the last images are the last classes' (SWEEN has no ImageNet).
    """
    # torchvision has no held-out split; random_split would not be SWEEN's "last images"
    if not 0 <= heldout < n_train:
        raise DataError(f"cannot hold out {heldout} of {n_train} training images")
    return list(range(n_train - heldout)), list(range(n_train - heldout, n_train))
