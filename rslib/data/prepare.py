"""Datasets: download, verify and convert to a single on-disk format (:mod:`rslib.data.load` loads it).

Every array dataset (``digits``, ``cifar10``, ``cifar100``, ``mnist``, ``svhn``, and a dataset of
the user's own, ``kind: npz`` or ``imagefolder``) is stored the same way::

    {data_dir}/{name}/train.npz     images uint8 N x C x H x W, labels int64 N
    {data_dir}/{name}/test.npz
    {data_dir}/{name}/meta.json     written last: the "finished" marker

ImageNet is never downloaded: ``meta.json`` (format ``"imagefolder"``) records
the root of a user-supplied ImageFolder tree holding ``train/`` and ``val/``.

torchvision does the dataset plumbing: ``download_url`` transfers, ``extract_archive``
unpacks, and ``CIFAR10``/``CIFAR100``/``SVHN`` check every file's md5 and parse it (``MNIST``
parses; the md5 of its downloads is checked here). What is left here is
what torchvision does not do, each function saying why: resuming an interrupted download,
sha256 and one-line errors that name the URL and the expected digest, refusing archive members
that escape the target, mirrors from the config, our ``.npz`` format with its checksums, the
ImageNet folder checks, and the held-out split. All writes are atomic and a failure leaves
no ``meta.json``, ``.npz``, unverified download or extraction folder behind (only the ``.part``
of a download cut by the network, to resume). Problems are reported as :class:`DataError` with
a single-line message; progress goes to stderr.
"""

from __future__ import annotations

import gzip
import http.client
import lzma
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rslib.data.load import SPLITS, _imagenet_missing, _read_meta
from rslib.data.registry import (
    DATASETS,
    EVALUATION_KEY,
    DatasetInfo,
    dataset_info,
    imagefolder_listing,
)
from rslib.runtime.errors import DataError
from rslib.runtime.io import atomic_path, file_digest, write_json


def _log(message: str) -> None:
    """Print a progress line to stderr."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Download and extraction: torchvision's, with what it lacks
# ---------------------------------------------------------------------------


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """``None`` if ``path`` matches the given checksums, else what differs. Not torchvision's
    ``check_integrity``: that knows md5 only and answers True/False without the digests."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                return f"expected {algorithm} {expected}, got {got}"
    return None


def _resume(url: str, part: Path) -> bool:
    """Finish a leftover ``part`` of ``url`` with an HTTP Range request: appended on a 206 for
    the right range, rewritten on a 200; False when the server refuses (the caller starts over).
    torchvision cannot resume: a download cut at 90% would start again from zero."""
    offset = part.stat().st_size
    request = urllib.request.Request(url, headers={"User-Agent": "rslib", "Range": f"bytes={offset}-"})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: the leftover is no prefix the server knows
            raise
        e.close()
        return False
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            return False
        _log(f"{part.name}: resuming at {offset / 1e6:.1f} MB" if resumed
             else f"{part.name}: the server does not resume (HTTP {response.status}); starting over")
        with open(part, "ab" if resumed else "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        missing = response.length  # what Content-Length announced and the connection did not bring
    if missing:
        raise DataError(f"download failed for {url}: incomplete transfer ({missing} bytes missing; re-run to resume)")
    return True


def download(url: str, dest: Path, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` and verify it; return ``dest``.

    torchvision's ``download_url`` does the http(s) transfer (redirects, progress bar) into
    ``dest`` + ``.part``; ours around it is what it lacks. file:// URLs (a mirror on a shared
    disk) are copied. A leftover ``.part`` of an interrupted run is resumed (:func:`_resume`).
    sha256 besides md5. A checksum mismatch deletes the file and names both digests, where
    torchvision keeps it and says "File not found or corrupted.". Every failure is one
    :class:`DataError` line naming the URL; after a network error the ``.part`` stays for the
    next run. A ``dest`` that exists and verifies is not downloaded again.
    """
    from torchvision.datasets.utils import download_url

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        problem = _checksum_problem(dest, md5, sha256)
        if problem is None:
            return dest
        _log(f"{dest}: existing file fails checksum ({problem}); downloading again")
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    _log(f"downloading {url} -> {dest}")
    try:
        if url.lower().startswith("file:"):  # a mirror on a shared disk; torchvision's download_url reads http(s)
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), part)
        elif not (part.exists() and _resume(url, part)):
            part.unlink(missing_ok=True)
            download_url(url, str(part.parent), part.name)  # no md5: ours below names the digests
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed for {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"download failed for {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException, RecursionError) as e:
        raise DataError(f"download failed for {url}: {str(e) or type(e).__name__}") from None
    problem = _checksum_problem(part, md5, sha256)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {dest.name}: {problem} (file removed; re-run to download again)")
    os.replace(part, dest)
    return dest


#: What a truncated or damaged archive raises while it is listed or extracted.
_CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, lzma.LZMAError, EOFError, zlib.error)


def _is_compressed_file(name: str) -> bool:
    """A single compressed file (MNIST's ``train-images-idx3-ubyte.gz``), not a compressed tar."""
    name = name.lower()
    return name.endswith((".gz", ".bz2", ".xz")) and not name.rsplit(".", 1)[0].endswith(".tar")


def extract_archive(archive: Path, into: Path) -> None:
    """Extract a tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) or .zip ``archive`` into ``into``,
    or decompress a single .gz/.bz2/.xz file there (named without the suffix),
    with torchvision's ``extract_archive``, adding what it lacks: tar members that would land
    outside ``into`` (absolute, ``..``, links out, devices) are refused before anything is written
    (torchvision extracts tars unfiltered before Python 3.14; ``zipfile`` already sanitises zip
    names); a corrupt archive is ``DataError("corrupt archive <name>: <reason>")``; and on any
    failure what was extracted is removed (the whole of ``into`` if this call created it).
    """
    from torchvision.datasets.utils import extract_archive as torchvision_extract

    archive, into = Path(archive), Path(into)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    created = not into.exists()
    before = set() if created else set(into.iterdir())
    into.mkdir(parents=True, exist_ok=True)
    _log(f"extracting {archive.name} -> {into}")
    try:
        if archive.suffix.lower() != ".zip" and not _is_compressed_file(archive.name):
            if not hasattr(tarfile, "data_filter"):
                raise DataError(f"cannot check {archive.name} for unsafe members: Python 3.11.4 or later is needed")
            with tarfile.open(archive) as tar:
                for member in tar:  # the stdlib's "data" filter judges; it writes nothing here
                    safe = tarfile.data_filter(member, str(into))  # raises tarfile.FilterError
                    if (safe.name, safe.linkname) != (member.name, member.linkname):  # it strips a leading /
                        raise tarfile.AbsolutePathError(member)
        torchvision_extract(str(archive), str(into))
    except BaseException as e:
        if created:
            shutil.rmtree(into, ignore_errors=True)
        else:
            for p in set(into.iterdir()) - before:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        if isinstance(e, tarfile.FilterError):
            raise DataError(f"unsafe archive {archive.name}: {e}") from None
        if isinstance(e, _CORRUPT_ERRORS):
            raise DataError(f"corrupt archive {archive.name}: {e}") from None
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, DataError):  # RuntimeError: unknown suffix
            raise DataError(f"could not extract {archive.name}: {e}") from None
        raise


# ---------------------------------------------------------------------------
# Writing the npz format
# ---------------------------------------------------------------------------


def _check_arrays(info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Validate converted arrays against the registry before writing them (our format's
    contract; torchvision's classes hold whatever the files held)."""
    name = info.name
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != info.image_shape:
        raise DataError(
            f"{name} {split}: expected uint8 images N x {'x'.join(map(str, info.image_shape))}, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{name} {split}: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(
            f"{name} {split}: labels outside 0..{info.num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()})"
        )


def _write_npz_dataset(
    out_dir: Path,
    info: DatasetInfo,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    source: Any,
) -> Path:
    """Write ``train.npz``, ``test.npz`` and finally ``meta.json``; return its path. Our on-disk
    format: one loader and sha256-checked files for every dataset, where torchvision keeps each
    dataset's own files and re-parses them on every load.

    If anything fails, the ``.npz`` files written by this call are removed.
    """
    name = info.name
    files: dict[str, str] = {}
    written: list[Path] = []
    try:
        for split in SPLITS:
            images, labels = splits[split]
            images = np.ascontiguousarray(images, dtype=np.uint8)
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            _check_arrays(info, split, images, labels)
            path = out_dir / f"{split}.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, images=images, labels=labels)
            written.append(path)
            files[path.name] = file_digest(path, "sha256")
            _log(f"{name}: wrote {path} ({images.shape[0]} images)")
        meta = {
            "name": name,
            "format": "npz",
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "n_train": int(splits["train"][0].shape[0]),
            "n_test": int(splits["test"][0].shape[0]),
            "files": files,
            "source": source,
        }
        meta_path = out_dir / "meta.json"
        write_json(meta_path, meta)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return meta_path


# ---------------------------------------------------------------------------
# Per-dataset preparation
# ---------------------------------------------------------------------------


def _resolve_remote(
    override: dict | None, default_url: str, default_md5: str, what: str
) -> dict[str, str]:
    """Merge a mirror override ``{"url", "md5"[, "sha256"]}`` from the config with torchvision's
    URL and md5 (its dataset classes take no mirror argument)."""
    if override is None:
        return {"url": default_url, "md5": default_md5}
    if not isinstance(override, dict):
        raise DataError(f"{what}: source must be a mapping with 'url' and 'md5', got {override!r}")
    unknown = set(override) - {"url", "md5", "sha256"}
    if unknown:
        raise DataError(
            f"{what}: unknown source keys {sorted(unknown)} (allowed: url, md5, sha256)"
        )
    remote = {"url": str(override.get("url") or default_url)}
    if override.get("sha256"):
        remote["sha256"] = str(override["sha256"])
    if override.get("md5") or "sha256" not in remote:
        remote["md5"] = str(override.get("md5") or default_md5)
    return remote


def _fetch(remote: dict[str, str], dest: Path) -> Path:
    """Download a resolved remote (see :func:`_resolve_remote`) to ``dest`` with :func:`download`."""
    return download(remote["url"], dest, md5=remote.get("md5"), sha256=remote.get("sha256"))


def _prepare_digits(out_dir: Path, source: dict | None) -> Path:
    """sklearn's bundled 8x8 digits, stratified 1,297/500 train/test split (the offline
    stand-in for CIFAR-10; not a torchvision dataset)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(labels.size), test_size=500, stratify=labels, random_state=0
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    splits = {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
    }
    return _write_npz_dataset(out_dir, dataset_info("digits"), splits, "sklearn.datasets.load_digits")


def _prepare_cifar(out_dir: Path, source: dict | None, name: str) -> Path:
    """CIFAR-10 and CIFAR-100: our download of the (mirrored) archive, torchvision's extraction,
    and torchvision's ``CIFAR10``/``CIFAR100``, which md5-checks each batch (so only the dataset's
    own pickles are ever unpickled) and parses it (CIFAR-100: its 100 fine labels); ours is the
    conversion to N x C x H x W and our format."""
    from torchvision.datasets import CIFAR10, CIFAR100

    parser, label = {"cifar10": (CIFAR10, "CIFAR-10"), "cifar100": (CIFAR100, "CIFAR-100")}[name]
    remote = _resolve_remote(source, parser.url, parser.tgz_md5, name)
    archive = _fetch(remote, out_dir / "downloads" / parser.filename)
    tmp = out_dir / f".extract-{uuid.uuid4().hex[:12]}"
    try:
        try:
            extract_archive(archive, tmp)
            parsed = {split: parser(str(tmp), train=split == "train") for split in SPLITS}
        except (DataError, RuntimeError) as e:
            archive.unlink(missing_ok=True)
            if not isinstance(e, DataError):  # torchvision: a batch is missing or not the dataset's
                e = DataError(f"{archive.name} from {remote['url']} does not hold {label}'s batches "
                              f"(torchvision: {str(e).split('.')[0]})")
            raise DataError(f"{e} (archive removed; re-run to download again)") from None
        # torchvision holds N x H x W x C (for PIL); our format is N x C x H x W
        splits = {split: (ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)) for split, ds in parsed.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _write_npz_dataset(out_dir, dataset_info(name), splits, remote)


def _file_sources(source: dict | None, keys: tuple[str, ...], what: str) -> dict:
    """A source of several downloads (``{key: {"url", "md5"}}``, each key optional), checked."""
    if source is not None and not isinstance(source, dict):
        raise DataError(f"{what}: source must be a mapping with {'/'.join(map(repr, keys))} entries, got {source!r}")
    unknown = set(source or {}) - set(keys)
    if unknown:
        raise DataError(f"{what}: unknown source keys {sorted(unknown)} (allowed: {', '.join(keys)})")
    return source or {}


def _prepare_svhn(out_dir: Path, source: dict | None) -> Path:
    """SVHN: our download of each (mirrored) ``.mat``, then torchvision's ``SVHN`` md5-checks and
    parses it (N x C x H x W, label 10 -> 0). The mirror is a subclass whose ``split_list`` holds
    the configured URL and md5; ours is that, the resumable download and our format."""
    from scipy.io.matlab import MatReadError
    from torchvision.datasets import SVHN

    source = _file_sources(source, SPLITS, "svhn")
    remotes = {split: _resolve_remote(source.get(split), SVHN.split_list[split][0], SVHN.split_list[split][2],
                                      f"svhn {split}") for split in SPLITS}
    mirrored = type("MirroredSVHN", (SVHN,), {"split_list": {
        split: [r["url"], SVHN.split_list[split][1], r.get("md5")] for split, r in remotes.items()}})
    root = out_dir / "downloads"
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        path = _fetch(remotes[split], root / SVHN.split_list[split][1])
        try:
            ds = mirrored(str(root), split=split)
        except (MatReadError, KeyError, ValueError, TypeError, OSError, EOFError, NotImplementedError) as e:
            path.unlink(missing_ok=True)
            raise DataError(f"corrupt file {path.name}: {e} (file removed; re-run to download again)") from None
        splits[split] = (ds.data, ds.labels)
    return _write_npz_dataset(out_dir, dataset_info("svhn"), splits, remotes)


#: MNIST's four downloads as ``source`` keys, in the order of torchvision's ``MNIST.resources``.
MNIST_FILES = ("train_images", "train_labels", "test_images", "test_labels")


def _prepare_mnist(out_dir: Path, source: dict | None) -> Path:
    """MNIST: our download of its four (mirrored) ``.gz`` files, by default from torchvision's first
    mirror with its md5s (``MNIST.mirrors``, ``MNIST.resources``), decompressed by torchvision's
    ``extract_archive``, then parsed by torchvision's ``MNIST`` (the IDX files, N x 28 x 28; ours
    adds the channel axis). torchvision checks the md5 only inside its own download, which cannot
    take a mirror, so ours checks each file's."""
    from torchvision.datasets import MNIST

    source = _file_sources(source, MNIST_FILES, "mnist")
    downloads = out_dir / "downloads"
    tmp = out_dir / f".extract-{uuid.uuid4().hex[:12]}"
    remotes: dict[str, dict[str, str]] = {}
    try:
        for key, (filename, md5) in zip(MNIST_FILES, MNIST.resources):
            remotes[key] = _resolve_remote(source.get(key), MNIST.mirrors[0] + filename, md5, f"mnist {key}")
            archive = _fetch(remotes[key], downloads / filename)
            try:
                extract_archive(archive, tmp / "MNIST" / "raw")
            except DataError as e:
                archive.unlink(missing_ok=True)
                raise DataError(f"{e} (file removed; re-run to download again)") from None
        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split in SPLITS:
            try:
                ds = MNIST(str(tmp), train=split == "train")
            except (AssertionError, RuntimeError, TypeError, ValueError, KeyError) as e:
                names = [filename for key, (filename, _) in zip(MNIST_FILES, MNIST.resources) if key.startswith(split)]
                for filename in names:
                    (downloads / filename).unlink(missing_ok=True)
                raise DataError(f"{' and '.join(names)} do not hold MNIST's {split} images and labels (torchvision: "
                                f"{str(e) or type(e).__name__}) (files removed; re-run to download again)") from None
            splits[split] = (ds.data.numpy()[:, None], ds.targets.numpy())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _write_npz_dataset(out_dir, dataset_info("mnist"), splits, remotes)


def _imagenet_root(source: dict | None) -> Path:
    """The configured ImageNet root (``source["root"]`` or ``$IMAGENET_DIR``), checked: the
    config key is ours, torchvision's ``ImageFolder`` takes a path."""
    if source is not None and not isinstance(source, dict):
        raise DataError(f"imagenet: source must be a mapping with 'root', got {source!r}")
    root = (source or {}).get("root") or os.environ.get("IMAGENET_DIR") or ""
    path = Path(root).expanduser()
    if not root or not (path / "train").is_dir() or not (path / "val").is_dir():
        raise _imagenet_missing(str(root))
    return path.resolve()


def _prepare_imagenet(out_dir: Path, source: dict | None) -> Path:
    """Check a user-supplied ImageFolder tree and record it in meta.json. torchvision finds the
    classes and images (``find_classes``, ``make_dataset``, as ``ImageFolder`` will); ours is
    that train/ and val/ name the same classes, one error line naming the folder, and the record."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = _imagenet_root(source)
    try:
        train_classes, _ = find_classes(root / "train")
        val_classes, _ = find_classes(root / "val")
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DataError(
                f"ImageNet train/ and val/ class folders differ under '{root}': "
                f"{len(only_train)} only in train/ {only_train[:3]}, {len(only_val)} only in val/ {only_val[:3]}"
            )
        expected = dataset_info("imagenet").num_classes
        if len(train_classes) != expected:
            _log(f"warning: ImageNet folder '{root}' has {len(train_classes)} classes, expected {expected}")
        _log(f"imagenet: counting the images under {root} (file names only)")
        n_train, n_test = (len(make_dataset(str(root / s), extensions=IMG_EXTENSIONS)) for s in ("train", "val"))
    except FileNotFoundError as e:  # torchvision: no class folder, or a class folder without images
        raise DataError(f"ImageNet folder '{root}': {e}".strip()) from None
    _log(f"imagenet: {len(train_classes)} classes, {n_train} train and {n_test} val images")
    meta = {
        "name": "imagenet",
        "format": "imagefolder",
        "num_classes": len(train_classes),
        "image_shape": list(dataset_info("imagenet").image_shape),
        "n_train": n_train,
        "n_test": n_test,
        "root": str(root),
        "files": {},
        "source": str(root),
    }
    meta_path = out_dir / "meta.json"
    write_json(meta_path, meta)
    return meta_path


_PREPARERS: dict[str, Callable[[Path, dict | None], Path]] = {
    "digits": _prepare_digits,
    "cifar10": partial(_prepare_cifar, name="cifar10"),
    "cifar100": partial(_prepare_cifar, name="cifar100"),
    "mnist": _prepare_mnist,
    "svhn": _prepare_svhn,
    "imagenet": _prepare_imagenet,
}


# ---------------------------------------------------------------------------
# A dataset of the user's own (datasets.<name>.kind: npz or imagefolder)
# ---------------------------------------------------------------------------


def _user_key(info: DatasetInfo, key: str) -> str:
    """How a message names ``key`` of a dataset of the user's own: ``datasets.<name>.<key>``, or
    ``DATASET`` for images to certify only (``rslib certify``'s argument)."""
    return EVALUATION_KEY if info.user.evaluation_only else f"datasets.{info.name}.{key}"


def _user_npz_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``images`` and ``labels`` of a user's npz file (their layout was checked from the
    headers by :func:`rslib.data.registry.user_dataset_info`)."""
    path = getattr(info.user, split)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["images"], npz["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{_user_key(info, split)}: cannot read {path}: {e}") from None


def _imagefolder_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One ImageFolder split as arrays: each image (Pillow, as torchvision's loader) converted to
    grey or RGB (one or three ``mean`` values), resized so that its shorter side is ``image_size``
    and centre-cropped to ``image_size`` x ``image_size`` (torchvision's ``Resize``, bilinear with
    antialiasing, and ``CenterCrop``): the aspect ratio is kept and every image gets the same,
    deterministic pixels, which certification evaluates exactly; training augments them like
    CIFAR-10 (``hparams.augment``). Labels are the train/ class folders' indices (images to
    certify only: their own class folders')."""
    from PIL import Image
    from torchvision import transforms

    key, user = _user_key(info, "root"), info.user
    index = {name: i for i, name in enumerate(imagefolder_listing(Path(user.train or user.test), key,
                                                                  allow_empty=user.evaluation_only)[0])}
    _, files = imagefolder_listing(Path(getattr(user, split)), key, allow_empty=split == "test")
    resize = transforms.Compose([transforms.Resize(user.image_size), transforms.CenterCrop(user.image_size)])
    mode = "L" if info.image_shape[0] == 1 else "RGB"
    images = np.empty((len(files), *info.image_shape), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int64)
    for i, (path, name) in enumerate(files):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(resize(image.convert(mode)), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            raise DataError(f"{key}: cannot read image {path}: {e}") from None
        images[i] = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
        labels[i] = index[name]
        if (i + 1) % 10000 == 0:
            _log(f"{info.name} {split}: {i + 1} of {len(files)} images")
    return images, labels


def _user_record(info: DatasetInfo) -> dict[str, Any]:
    """What a user's dataset was prepared from (meta.json's ``source``): its entry's values and,
    for npz files, their sha256; preparing again is needed when this changes."""
    user = info.user
    record: dict[str, Any] = {"kind": user.kind, "classes": info.num_classes, "mean": list(info.mean),
                              "std": list(info.std)}
    if user.kind == "npz":
        return record | {split: {"path": getattr(user, split), "sha256": file_digest(Path(getattr(user, split)),
                                                                                    "sha256")}
                         for split in SPLITS if getattr(user, split)}
    return record | {"train": user.train, "test": user.test, "image_size": user.image_size}


def _prepare_user(out_dir: Path, info: DatasetInfo) -> Path:
    """A dataset of the user's own in our format; its labels checked against ``classes``: all in
    0 .. classes - 1, and every class among the training labels. Images to certify only get an
    empty train split."""
    read = _user_npz_split if info.user.kind == "npz" else _imagefolder_split
    no_images = (np.empty((0, *info.image_shape), dtype=np.uint8), np.empty(0, dtype=np.int64))
    splits = {split: read(info, split) if getattr(info.user, split) else no_images for split in SPLITS}
    k, where = info.num_classes, f"datasets.{info.name}.classes"
    for split, (_, labels) in splits.items():
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise DataError(f"{where}: {k}, but the {split} labels of {getattr(info.user, split)} run from "
                            f"{labels.min()} to {labels.max()}; labels must be 0 .. {k - 1}")
    used = np.unique(splits["train"][1])
    if used.size < k and not info.user.evaluation_only:
        missing = sorted(set(range(k)) - set(used.tolist()))
        raise DataError(f"{where}: {k}, but the train labels of {info.user.train} use only {used.size} classes "
                        f"(none is {', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''})")
    return _write_npz_dataset(out_dir, info, splits, _user_record(info))


def _existing_problem(meta_path: Path, info: DatasetInfo, source: dict | None) -> str | None:
    """Why an existing meta.json cannot be reused (``None`` if it can): our format's files
    against their recorded sha256, the ImageNet root against the config's, or what a user's
    dataset was prepared from against its entry and files now."""
    name = info.name
    try:
        meta = _read_meta(meta_path)
    except DataError as e:
        return str(e)
    if meta.get("name") != name:
        return f"records dataset {meta.get('name')!r}, not {name!r}"
    if meta["format"] == "imagefolder":
        try:
            root = _imagenet_root(source)
        except DataError as e:
            return str(e)
        if meta.get("root") != str(root):
            return f"records root {meta.get('root')!r}, not '{root}'"
        return None
    sizes = (meta.get("n_train"), meta.get("n_test")) == (info.train_images, info.test_images)
    if info.user is not None and (meta.get("source") != _user_record(info) or not sizes):
        return "was prepared from another configuration entry or other files"
    files = meta.get("files") or {}
    if set(files) != {f"{s}.npz" for s in SPLITS}:
        return "lists no train.npz/test.npz checksums"
    for filename, digest in files.items():
        path = meta_path.parent / filename
        if not path.is_file():
            return f"{filename} is missing"
        if file_digest(path, "sha256") != digest:
            return f"{filename} does not match its sha256"
    return None


def prepare_dataset(name: str, data_dir: str | Path, source: dict | None = None, *,
                    evaluation_only: bool = False) -> Path:
    """Prepare dataset ``name`` under ``{data_dir}/{name}/``; return its meta.json path.

    If meta.json exists and the files it lists verify, nothing is done.
    ``source`` overrides download locations/checksums: cifar10 and cifar100
    ``{"url", "md5"}``; svhn ``{"train": {"url", "md5"}, "test": {...}}``; mnist
    ``{"train_images": {"url", "md5"}, "train_labels", "test_images", "test_labels"}``;
    imagenet ``{"root": path}`` (else ``$IMAGENET_DIR``). Downloads are kept
    in ``{data_dir}/{name}/downloads/``. For a dataset of the user's own, ``source`` is its
    configuration entry (:func:`rslib.data.registry.dataset_source`: kind, files, classes, mean,
    std, image size); ``evaluation_only``: images to certify only
    (:func:`rslib.data.registry.evaluation_dataset_info`, ``rslib certify``). Ours: the data rule's
    one entry point over every dataset (torchvision has one class per dataset, each with its own
    arguments).
    """
    info = dataset_info(name, None if name in DATASETS else source, evaluation_only=evaluation_only)
    out_dir = Path(data_dir) / name
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        problem = _existing_problem(meta_path, info, source)
        if problem is None:
            _log(f"{name}: already prepared ({meta_path})")
            return meta_path
        _log(f"{name}: existing {meta_path} is stale ({problem}); preparing again")
        meta_path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    if info.user is not None:
        return _prepare_user(out_dir, info)
    return _PREPARERS[name](out_dir, source)
