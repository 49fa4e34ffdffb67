"""Datasets: download, verify, convert to a single on-disk format, and load.

Every array dataset (``digits``, ``cifar10``, ``svhn``) is stored the same way::

    {data_dir}/{name}/train.npz     images uint8 N x C x H x W, labels int64 N
    {data_dir}/{name}/test.npz
    {data_dir}/{name}/meta.json     written last: the "finished" marker

ImageNet is never downloaded: ``meta.json`` (format ``"imagefolder"``) records
the root of a user-supplied ImageFolder tree holding ``train/`` and ``val/``.

All writes are atomic (temporary file in the same folder, then ``os.replace``),
so a failure never leaves a ``meta.json`` or a half-written ``.npz`` behind.
Problems are reported as :class:`DataError` with a single-line message naming
the file or URL involved; progress goes to stderr.
"""

from __future__ import annotations

import gzip
import http.client
import json
import lzma
import os
import pickle
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset_registry import (
    DATASETS,
    DatasetInfo,
    available_evaluation_images,
    dataset_info,
    evaluation_indices,
)
from .errors import DataError
from .io import file_digest

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "TensorImageDataset",
    "dataset_info",
    "download",
    "available_evaluation_images",
    "evaluation_indices",
    "extract_archive",
    "load_split",
    "heldout_split",
    "prepare_dataset",
]


SPLITS = ("train", "test")


# ---------------------------------------------------------------------------
# Small helpers: progress, hashing, atomic writes
# ---------------------------------------------------------------------------


def _log(message: str) -> None:
    """Print a progress line to stderr."""
    print(message, file=sys.stderr, flush=True)


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """Return ``None`` if ``path`` matches the given checksums, else a description."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                return f"expected {algorithm} {expected}, got {got}"
    return None


def _temp_path(folder: Path, name: str) -> Path:
    """A fresh, unused temporary path inside ``folder`` (same filesystem)."""
    return folder / f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def _atomic_write(path: Path, writer: Callable[[Any], None]) -> None:
    """Call ``writer(binary_file)`` on a temp file next to ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_save_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Save ``images``/``labels`` to an (uncompressed) ``.npz`` atomically."""
    _atomic_write(path, lambda f: np.savez(f, images=images, labels=labels))


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


def _progress_printer(label: str, total: int | None) -> Callable[[int], None]:
    """Return ``report(done)`` that prints about every 10% (every 100 MB if size unknown)."""
    state = {"next": 1}  # next decile (or next 100 MB step) worth a line

    def report(done: int) -> None:
        step = done * 10 // total if total else done // 100_000_000
        if step >= state["next"]:
            state["next"] = step + 1
            if total:
                _log(f"{label}: {done / total:.0%} ({done / 1e6:.1f}/{total / 1e6:.1f} MB)")
            else:
                _log(f"{label}: {done / 1e6:.0f} MB")

    return report


def _copy_stream(src: Any, dst: Any, chunk: int, done: int, report: Callable[[int], None]) -> int:
    """Copy ``src`` to ``dst`` chunk by chunk; return the byte count reached."""
    while block := src.read(chunk):
        dst.write(block)
        done += len(block)
        report(done)
    return done


def _fetch_file_url(url: str, part: Path, chunk: int) -> None:
    """Copy a ``file://`` URL into ``part`` (always from the start)."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    total = source.stat().st_size
    report = _progress_printer(part.name.removesuffix(".part"), total)
    with open(source, "rb") as src, open(part, "wb") as dst:
        _copy_stream(src, dst, chunk, 0, report)


def _fetch_http(url: str, part: Path, chunk: int, timeout: float = 60.0) -> None:
    """Stream ``url`` into ``part``, resuming a leftover ``part`` with a Range request."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "rslib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Leftover .part is not a prefix the server accepts: start over.
            e.close()
            part.unlink()
            _fetch_http(url, part, chunk, timeout)
            return
        raise
    with response:
        status = response.status
        if status == 206 and not response.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        ):
            # A partial answer for some other range: discard it and start over.
            part.unlink(missing_ok=True)
            response.close()
            _fetch_http(url, part, chunk, timeout)
            return
        resumed = bool(offset) and status == 206
        if resumed:
            _log(f"{part.name}: resuming at {offset / 1e6:.1f} MB")
        elif offset:
            _log(f"{part.name}: server did not resume (HTTP {status}); starting over")
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        report = _progress_printer(part.name.removesuffix(".part"), total)
        with open(part, "ab" if resumed else "wb") as f:
            done = _copy_stream(response, f, chunk, offset, report)
    if total is not None and done != total:
        raise DataError(
            f"download failed for {url}: incomplete transfer ({done} of {total} bytes; "
            f"re-run to resume)"
        )


def download(
    url: str,
    dest: Path,
    md5: str | None = None,
    sha256: str | None = None,
    chunk: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    The data streams into ``dest`` + ``.part``; a leftover ``.part`` from an
    interrupted run is resumed with an HTTP ``Range`` request (appended on
    ``206``, restarted on ``200``). ``file://`` URLs are copied (no resume).
    If ``dest`` already exists and verifies, nothing is downloaded. On a
    checksum mismatch the ``.part`` is deleted and :class:`DataError` raised;
    on a network error the ``.part`` is kept so that a re-run resumes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        problem = _checksum_problem(dest, md5, sha256)
        if problem is None:
            return dest
        _log(f"{dest}: existing file fails checksum ({problem}); downloading again")
        dest.unlink()
    part = dest.with_suffix(dest.suffix + ".part")
    scheme = urllib.parse.urlparse(url).scheme.lower()
    _log(f"downloading {url} -> {dest}")
    try:
        if scheme == "file":
            _fetch_file_url(url, part, chunk)
        elif scheme in ("http", "https"):
            _fetch_http(url, part, chunk)
        else:
            raise DataError(f"unsupported URL scheme {scheme!r} in {url}")
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed for {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"download failed for {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        reason = str(e) or type(e).__name__
        raise DataError(f"download failed for {url}: {reason}") from None
    problem = _checksum_problem(part, md5, sha256)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {dest.name}: {problem} "
            f"(file removed; re-run to download again)"
        )
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------

_CORRUPT_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


def _unsafe_member(name: str) -> bool:
    """True for archive member names that could escape the target folder."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in name.replace("\\", "/").split("/")


def _extract_tar(archive: Path, into: Path) -> None:
    """Extract a (possibly compressed) tar after checking every member."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            if _unsafe_member(m.name):
                raise DataError(
                    f"unsafe archive {archive.name}: member {m.name!r} escapes the target"
                )
            if m.islnk() or m.issym():
                if _unsafe_member(m.linkname):
                    raise DataError(
                        f"unsafe archive {archive.name}: link {m.name!r} -> {m.linkname!r}"
                    )
            elif not (m.isfile() or m.isdir()):
                raise DataError(f"unsafe archive {archive.name}: special file {m.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(into, members=members)


def _extract_zip(archive: Path, into: Path) -> None:
    """Extract a zip file after checking every member name."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if _unsafe_member(name):
                raise DataError(
                    f"unsafe archive {archive.name}: member {name!r} escapes the target"
                )
        zf.extractall(into)


def extract_archive(archive: Path, into: Path) -> None:
    """Extract a tar, tar.gz/bz2/xz or zip ``archive`` into the folder ``into``.

    Members with absolute paths or ``..`` components are rejected. A truncated
    or corrupt archive raises ``DataError("corrupt archive <name>: <reason>")``;
    on any failure what was extracted is removed (the whole of ``into`` if this
    call created it).
    """
    archive, into = Path(archive), Path(into)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    created = not into.exists()
    before = set() if created else {p.name for p in into.iterdir()}
    into.mkdir(parents=True, exist_ok=True)
    is_zip = archive.suffix.lower() == ".zip" or (
        not archive.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))
        and zipfile.is_zipfile(archive)
    )
    _log(f"extracting {archive.name} -> {into}")
    try:
        (_extract_zip if is_zip else _extract_tar)(archive, into)
    except BaseException as e:
        if created:
            shutil.rmtree(into, ignore_errors=True)
        else:
            for p in into.iterdir():
                if p.name in before:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        if isinstance(e, _CORRUPT_ERRORS):
            raise DataError(f"corrupt archive {archive.name}: {e}") from None
        if isinstance(e, OSError):
            raise DataError(f"could not extract {archive.name}: {e}") from None
        raise


# ---------------------------------------------------------------------------
# Writing the npz format
# ---------------------------------------------------------------------------


def _check_arrays(name: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Validate converted arrays against the registry before writing them."""
    info = DATASETS[name]
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
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    source: Any,
) -> Path:
    """Write ``train.npz``, ``test.npz`` and finally ``meta.json``; return its path.

    If anything fails, the ``.npz`` files written by this call are removed.
    """
    info = DATASETS[name]
    files: dict[str, str] = {}
    written: list[Path] = []
    try:
        for split in SPLITS:
            images, labels = splits[split]
            images = np.ascontiguousarray(images, dtype=np.uint8)
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            _check_arrays(name, split, images, labels)
            path = out_dir / f"{split}.npz"
            _atomic_save_npz(path, images, labels)
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
        _atomic_write_json(meta_path, meta)
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
    """Merge a mirror override ``{"url", "md5"[, "sha256"]}`` with the defaults."""
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
    """Download a resolved remote (see :func:`_resolve_remote`) to ``dest``."""
    return download(remote["url"], dest, md5=remote.get("md5"), sha256=remote.get("sha256"))


def _prepare_digits(out_dir: Path, source: dict | None) -> Path:
    """sklearn's bundled 8x8 digits, stratified 1,297/500 train/test split."""
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
    return _write_npz_dataset(out_dir, "digits", splits, "sklearn.datasets.load_digits")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (enough for the CIFAR batches)."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch into (N x 3 x 32 x 32 uint8, N int64)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 archive lacks {path.parent.name}/{path.name}") from None
    except (
        pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError
    ) as e:
        raise DataError(f"unreadable CIFAR-10 batch {path.name}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(
            f"unreadable CIFAR-10 batch {path.name}: data {data.shape}, labels {labels.shape}"
        )
    # Each row holds the R, G and B planes of a 32x32 image, row-major.
    return data.reshape(-1, 3, 32, 32), labels


def _prepare_cifar10(out_dir: Path, source: dict | None) -> Path:
    """Download the CIFAR-10 python archive, extract it, and convert the pickles."""
    from torchvision.datasets import CIFAR10

    remote = _resolve_remote(source, CIFAR10.url, CIFAR10.tgz_md5, "cifar10")
    archive = _fetch(remote, out_dir / "downloads" / CIFAR10.filename)
    tmp = out_dir / f".extract-{uuid.uuid4().hex[:12]}"
    try:
        try:
            extract_archive(archive, tmp)
        except DataError as e:
            if str(e).startswith("corrupt archive"):
                archive.unlink(missing_ok=True)
                raise DataError(f"{e} (archive removed; re-run to download again)") from None
            raise
        base = tmp / CIFAR10.base_folder
        batches = [_read_cifar_batch(base / f"data_batch_{i}") for i in range(1, 6)]
        train = (np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]))
        splits = {"train": train, "test": _read_cifar_batch(base / "test_batch")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _write_npz_dataset(out_dir, "cifar10", splits, remote)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat`` into (N x 3 x 32 x 32 uint8, N int64), label 10 -> 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except (
        MatReadError, KeyError, ValueError, TypeError, OSError, EOFError, NotImplementedError
    ) as e:
        path.unlink(missing_ok=True)
        raise DataError(
            f"corrupt file {path.name}: {e} (file removed; re-run to download again)"
        ) from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise DataError(f"unexpected SVHN layout in {path.name}: X {x.shape}, y {y.shape}")
    images = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1))
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0
    return images, labels


def _prepare_svhn(out_dir: Path, source: dict | None) -> Path:
    """Download SVHN's train/test ``.mat`` files and convert them."""
    from torchvision.datasets import SVHN

    if source is not None and not isinstance(source, dict):
        raise DataError(
            f"svhn: source must be a mapping with 'train'/'test' entries, got {source!r}"
        )
    source = source or {}
    unknown = set(source) - set(SPLITS)
    if unknown:
        raise DataError(f"svhn: unknown source keys {sorted(unknown)} (allowed: train, test)")
    remotes: dict[str, dict[str, str]] = {}
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        url, filename, md5 = SVHN.split_list[split]
        remotes[split] = _resolve_remote(source.get(split), url, md5, f"svhn {split}")
        path = _fetch(remotes[split], out_dir / "downloads" / filename)
        splits[split] = _read_svhn_mat(path)
    return _write_npz_dataset(out_dir, "svhn", splits, remotes)


def _imagenet_missing(root: str) -> DataError:
    """The error raised when no usable ImageNet folder is configured."""
    return DataError(
        f"ImageNet folder not found: '{root}'. Download ILSVRC2012 yourself and set "
        "datasets.imagenet.root in the config (or IMAGENET_DIR) to a folder holding "
        "train/ and val/ in ImageFolder layout (one sub-folder per class)."
    )


def _imagenet_root(source: dict | None) -> Path:
    """The configured ImageNet root (``source["root"]`` or ``$IMAGENET_DIR``), checked."""
    if source is not None and not isinstance(source, dict):
        raise DataError(f"imagenet: source must be a mapping with 'root', got {source!r}")
    root = (source or {}).get("root") or os.environ.get("IMAGENET_DIR") or ""
    path = Path(root).expanduser()
    if not root or not (path / "train").is_dir() or not (path / "val").is_dir():
        raise _imagenet_missing(str(root))
    return path.resolve()


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted class sub-folder names, as torchvision's ImageFolder finds them."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def _count_images(split_dir: Path, classes: list[str]) -> int:
    """Count image files (by extension, not opened) below each class folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    total = 0
    for i, cls in enumerate(classes):
        n = 0
        for _, _, names in os.walk(split_dir / cls, followlinks=True):
            n += sum(1 for f in names if f.lower().endswith(IMG_EXTENSIONS))
        if n == 0:
            raise DataError(f"ImageNet class folder has no images: {split_dir / cls}")
        total += n
        if len(classes) >= 100 and (i + 1) % (len(classes) // 10) == 0:
            _log(f"counting {split_dir}: {i + 1}/{len(classes)} classes, {total} images")
    return total


def _prepare_imagenet(out_dir: Path, source: dict | None) -> Path:
    """Validate a user-supplied ImageFolder tree and record it in meta.json."""
    root = _imagenet_root(source)
    train_classes = _class_folders(root / "train")
    val_classes = _class_folders(root / "val")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise DataError(
            f"ImageNet train/ and val/ class folders differ under '{root}': "
            f"{len(only_train)} only in train/ {only_train[:3]}, "
            f"{len(only_val)} only in val/ {only_val[:3]}"
        )
    if not train_classes:
        raise DataError(f"ImageNet folder '{root}' has no class sub-folders in train/")
    expected = DATASETS["imagenet"].num_classes
    if len(train_classes) != expected:
        _log(
            f"warning: ImageNet folder '{root}' has {len(train_classes)} classes, "
            f"expected {expected}"
        )
    n_train = _count_images(root / "train", train_classes)
    n_test = _count_images(root / "val", val_classes)
    _log(f"imagenet: {len(train_classes)} classes, {n_train} train and {n_test} val images")
    meta = {
        "name": "imagenet",
        "format": "imagefolder",
        "num_classes": len(train_classes),
        "image_shape": list(DATASETS["imagenet"].image_shape),
        "n_train": n_train,
        "n_test": n_test,
        "root": str(root),
        "files": {},
        "source": str(root),
    }
    meta_path = out_dir / "meta.json"
    _atomic_write_json(meta_path, meta)
    return meta_path


_PREPARERS: dict[str, Callable[[Path, dict | None], Path]] = {
    "digits": _prepare_digits,
    "cifar10": _prepare_cifar10,
    "svhn": _prepare_svhn,
    "imagenet": _prepare_imagenet,
}


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _read_meta(meta_path: Path) -> dict:
    """Parse meta.json or raise :class:`DataError`."""
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


def _existing_problem(meta_path: Path, name: str, source: dict | None) -> str | None:
    """Why an existing meta.json cannot be reused (``None`` if it can)."""
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


def prepare_dataset(name: str, data_dir: str | Path, source: dict | None = None) -> Path:
    """Prepare dataset ``name`` under ``{data_dir}/{name}/``; return its meta.json path.

    If meta.json exists and the files it lists verify, nothing is done.
    ``source`` overrides download locations/checksums: cifar10
    ``{"url", "md5"}``; svhn ``{"train": {"url", "md5"}, "test": {...}}``;
    imagenet ``{"root": path}`` (else ``$IMAGENET_DIR``). Downloads are kept
    in ``{data_dir}/{name}/downloads/``.
    """
    dataset_info(name)
    out_dir = Path(data_dir) / name
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        problem = _existing_problem(meta_path, name, source)
        if problem is None:
            _log(f"{name}: already prepared ({meta_path})")
            return meta_path
        _log(f"{name}: existing {meta_path} is stale ({problem}); preparing again")
        meta_path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return _PREPARERS[name](out_dir, source)


class TensorImageDataset(Dataset):
    """In-memory image dataset: uint8 N x C x H x W images and int64 labels.

    ``dataset[i]`` is ``(float32 C x H x W in [0, 1], int label)``.
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
    """torchvision ImageFolder over ``root/train`` or ``root/val`` (pixels in [0, 1])."""
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
    augmentation/cropping and no normalisation.
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
    if not 0 <= heldout < n_train:
        raise DataError(f"cannot hold out {heldout} of {n_train} training images")
    return list(range(n_train - heldout)), list(range(n_train - heldout, n_train))
