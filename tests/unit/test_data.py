"""Tests for rslib.data: real code paths against fabricated, locally served data.

Nothing here touches the internet: archives are built in memory, in the layout torchvision's
CIFAR10 and SVHN read, and served by a tiny HTTP server on 127.0.0.1 (with Range support) or
via file:// URLs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from rslib.data.registry import DATASETS, dataset_info, evaluation_indices
from rslib.runtime.errors import DataError
from rslib.data.load import TensorImageDataset, load_split
from rslib.data.prepare import download, extract_archive, prepare_dataset

# ---------------------------------------------------------------------------
# Local HTTP server with Range support
# ---------------------------------------------------------------------------


class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 and records requests."""

    def __init__(self, honor_range: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.honor_range = honor_range
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output quiet
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.honor_range and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[len("bytes=") : -1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def non_resuming_server():
    srv = FileServer(honor_range=False)
    yield srv
    srv.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def pickled_tar_gz(folder: str, members: list[tuple[str, object]]) -> tuple[bytes, dict[str, str]]:
    """A .tar.gz of ``members`` pickled (protocol 2, as the CIFAR releases) under ``folder/``, and
    each member's md5."""
    checksums, buf = {}, io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members:
            payload = pickle.dumps(content, protocol=2)
            checksums[name] = md5(payload)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue(), checksums


# ---------------------------------------------------------------------------
# Fabricated CIFAR-10 archive
# ---------------------------------------------------------------------------

CIFAR_TRAIN_PER_BATCH = 3
CIFAR_TEST = 4


def _cifar_batch(rng: np.random.Generator, n: int) -> dict:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return {
        "batch_label": "fabricated",
        "data": data,
        "labels": labels,
        "filenames": [f"img{i}.png" for i in range(n)],
    }


def make_cifar_archive() -> tuple[bytes, list[dict], dict, dict[str, str]]:
    """A small cifar-10-python.tar.gz with the real layout (pickled batches and batches.meta in
    cifar-10-batches-py/); also returns each member's md5."""
    rng = np.random.default_rng(123)
    train = [_cifar_batch(rng, CIFAR_TRAIN_PER_BATCH) for _ in range(5)]
    test = _cifar_batch(rng, CIFAR_TEST)
    members = [(f"data_batch_{i + 1}", b) for i, b in enumerate(train)]
    members += [("test_batch", test), ("batches.meta", {"label_names": [f"class{k}" for k in range(10)]})]
    archive, checksums = pickled_tar_gz("cifar-10-batches-py", members)
    return archive, train, test, checksums


@pytest.fixture(scope="module")
def unpatched_cifar_archive() -> tuple[bytes, list[dict], dict, dict[str, str]]:
    """The fabricated archive; torchvision's CIFAR10 refuses its batches (not the real dataset's)."""
    return make_cifar_archive()


@pytest.fixture
def cifar_archive(unpatched_cifar_archive, monkeypatch: pytest.MonkeyPatch):
    """The fabricated archive, with torchvision's CIFAR10 told the md5 of its batches (it checks
    each batch against the real dataset's): the fabricated batches stand in for the real ones."""
    from torchvision.datasets import CIFAR10

    checksums = unpatched_cifar_archive[3]
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", checksums[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", checksums["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": checksums["batches.meta"]})
    return unpatched_cifar_archive


def _leftovers(folder: Path) -> list[str]:
    """Names under ``folder`` that look finished or half-done."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name == "meta.json"
        or p.suffix in (".npz", ".part", ".gz", ".tmp", ".mat")
        or p.name.startswith(".extract-")
    )


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_values_and_unknown_dataset(tmp_path: Path) -> None:
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "mnist", "svhn", "imagenet"}
    assert dataset_info("cifar10").mean == (0.4914, 0.4822, 0.4465)
    assert dataset_info("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert dataset_info("imagenet").format == "imagefolder"
    assert dataset_info("imagenet").image_shape == (3, 224, 224)
    assert dataset_info("digits").image_shape == (1, 8, 8)
    cifar100, mnist = dataset_info("cifar100"), dataset_info("mnist")
    assert (cifar100.num_classes, cifar100.image_shape, cifar100.train_images, cifar100.test_images) == (
        100, (3, 32, 32), 50000, 10000)
    assert (mnist.num_classes, mnist.image_shape, mnist.train_images, mnist.test_images) == (
        10, (1, 28, 28), 60000, 10000)
    assert len(cifar100.mean) == len(cifar100.std) == 3 and len(mnist.mean) == len(mnist.std) == 1
    with pytest.raises(DataError) as e:
        dataset_info("x")
    assert str(e.value) == "unknown dataset 'x'; known: cifar10, cifar100, digits, imagenet, mnist, svhn"
    with pytest.raises(DataError, match="unknown dataset 'fashion'"):
        prepare_dataset("fashion", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_meta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_dataset("digits", tmp_path_factory.mktemp("data"))


def test_digits_format(digits_meta: Path) -> None:
    folder = digits_meta.parent
    assert digits_meta.name == "meta.json" and folder.name == "digits"
    meta = json.loads(digits_meta.read_text())
    assert meta["name"] == "digits"
    assert meta["format"] == "npz"
    assert meta["num_classes"] == 10
    assert meta["image_shape"] == [1, 8, 8]
    assert (meta["n_train"], meta["n_test"]) == (1297, 500)
    assert meta["source"] == "sklearn.datasets.load_digits"
    for split, n in (("train", 1297), ("test", 500)):
        path = folder / f"{split}.npz"
        assert meta["files"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
        with np.load(path) as npz:
            assert npz["images"].dtype == np.uint8 and npz["images"].shape == (n, 1, 8, 8)
            assert npz["labels"].dtype == np.int64 and npz["labels"].shape == (n,)
            assert npz["images"].max() == 255 and npz["images"].min() == 0
            assert set(np.unique(npz["labels"])) == set(range(10))
    assert not list(folder.glob(".*.tmp"))


def test_digits_pixels_are_rescaled_sklearn_values(digits_meta: Path) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().images
    expected = {int(round(v * 255 / 16)) for v in range(17)}
    with np.load(digits_meta.parent / "test.npz") as npz:
        images = npz["images"]
    assert set(np.unique(images)).issubset(expected)
    # every stored image is one of sklearn's, rescaled
    rescaled = np.rint(raw * 255 / 16).astype(np.uint8).reshape(len(raw), -1)
    known = {row.tobytes() for row in rescaled}
    assert all(img.reshape(-1).tobytes() in known for img in images)


def test_digits_second_call_does_no_work(digits_meta: Path) -> None:
    folder = digits_meta.parent
    names = ("train.npz", "test.npz", "meta.json")
    before = {n: (folder / n).stat().st_mtime_ns for n in names}
    again = prepare_dataset("digits", folder.parent)
    assert again == digits_meta
    assert {n: (folder / n).stat().st_mtime_ns for n in names} == before


def test_digits_split_is_stratified_and_deterministic(digits_meta: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    other = prepare_dataset("digits", tmp_path)
    for split in ("train", "test"):
        a, b = digits_meta.parent / f"{split}.npz", other.parent / f"{split}.npz"
        with np.load(a) as x, np.load(b) as y:
            assert np.array_equal(x["images"], y["images"])
            assert np.array_equal(x["labels"], y["labels"])
    all_counts = np.bincount(load_digits().target, minlength=10)
    folder = digits_meta.parent
    with np.load(folder / "test.npz") as t, np.load(folder / "train.npz") as r:
        test_counts = np.bincount(t["labels"], minlength=10)
        train_counts = np.bincount(r["labels"], minlength=10)
    assert np.array_equal(test_counts + train_counts, all_counts)
    # stratified: each class gets its proportional share of the 500 (within 1)
    assert np.all(np.abs(test_counts - all_counts * 500 / all_counts.sum()) <= 1)


def test_digits_mean_std_match_recomputation(digits_meta: Path) -> None:
    with np.load(digits_meta.parent / "train.npz") as npz:
        pixels = npz["images"].astype(np.float64) / 255.0
    info = dataset_info("digits")
    assert info.mean == pytest.approx((pixels.mean(),), abs=6e-5)
    assert info.std == pytest.approx((pixels.std(),), abs=6e-5)


def test_load_split_digits(digits_meta: Path) -> None:
    ds = load_split(digits_meta, "test")
    assert isinstance(ds, TensorImageDataset)
    assert len(ds) == 500 and ds.num_classes == 10
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x, ds.images[3].float() / 255)
    assert isinstance(y, int) and y == int(ds.labels[3])
    assert len(load_split(str(digits_meta), "train")) == 1297
    with pytest.raises(DataError, match="split"):
        load_split(digits_meta, "val")


def test_modified_npz_is_detected_and_reprepared(tmp_path: Path) -> None:
    meta = prepare_dataset("digits", tmp_path)
    train = meta.parent / "train.npz"
    blob = bytearray(train.read_bytes())
    blob[-100] ^= 0xFF
    train.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"train\.npz does not match meta\.json"):
        load_split(meta, "train")
    assert prepare_dataset("digits", tmp_path) == meta
    assert len(load_split(meta, "train")) == 1297


# ---------------------------------------------------------------------------
# cifar10
# ---------------------------------------------------------------------------


def test_cifar10_end_to_end(server: FileServer, cifar_archive, tmp_path: Path) -> None:
    blob, train, test, _ = cifar_archive
    server.files["/mirror/cifar.tgz"] = blob
    source = {"url": server.url("/mirror/cifar.tgz"), "md5": md5(blob)}
    meta_path = prepare_dataset("cifar10", tmp_path, source=source)
    folder = tmp_path / "cifar10"
    meta = json.loads(meta_path.read_text())
    assert (meta["n_train"], meta["n_test"]) == (5 * CIFAR_TRAIN_PER_BATCH, CIFAR_TEST)
    assert meta["image_shape"] == [3, 32, 32] and meta["num_classes"] == 10
    assert meta["source"]["url"] == source["url"] and meta["source"]["md5"] == source["md5"]
    assert (folder / "downloads" / "cifar-10-python.tar.gz").read_bytes() == blob
    assert not list(folder.glob(".extract-*"))

    ds = load_split(meta_path, "train")
    assert ds.images.shape == (15, 3, 32, 32)
    # image 4 of the train split = image 1 of data_batch_2; pixel (c=1, h=5, w=7)
    raw = train[1]["data"][1]
    assert int(ds.images[4, 1, 5, 7]) == int(raw[1 * 1024 + 5 * 32 + 7])
    assert int(ds.images[4, 0, 0, 0]) == int(raw[0])
    assert int(ds.images[4, 2, 31, 31]) == int(raw[3071])
    assert ds.labels.tolist() == sum((b["labels"] for b in train), [])
    test_ds = load_split(meta_path, "test")
    assert test_ds.labels.tolist() == test["labels"]
    assert int(test_ds.images[2, 2, 10, 3]) == int(test["data"][2][2 * 1024 + 10 * 32 + 3])

    # Re-preparing: meta present -> no request; meta gone -> archive reused, no request.
    n_requests = len(server.requests)
    assert {path for path, _ in server.requests} == {"/mirror/cifar.tgz"}  # the mirror, not Toronto
    assert prepare_dataset("cifar10", tmp_path, source=source) == meta_path
    (meta_path).unlink()
    (folder / "train.npz").unlink()
    assert prepare_dataset("cifar10", tmp_path, source=source) == meta_path
    assert len(server.requests) == n_requests
    assert len(load_split(meta_path, "train")) == 15


def test_cifar10_checksum_mismatch(server: FileServer, cifar_archive, tmp_path: Path) -> None:
    blob = cifar_archive[0]
    server.files["/cifar.tgz"] = blob
    wrong = "0" * 32
    with pytest.raises(DataError) as e:
        source = {"url": server.url("/cifar.tgz"), "md5": wrong}
        prepare_dataset("cifar10", tmp_path, source=source)
    message = str(e.value)
    assert "checksum" in message and "cifar-10-python.tar.gz" in message
    assert wrong in message and md5(blob) in message
    assert "\n" not in message
    assert _leftovers(tmp_path) == []


def test_cifar10_truncated_archive(server: FileServer, cifar_archive, tmp_path: Path) -> None:
    truncated = cifar_archive[0][: len(cifar_archive[0]) // 2]
    server.files["/cifar.tgz"] = truncated
    source = {"url": server.url("/cifar.tgz"), "md5": md5(truncated)}
    with pytest.raises(DataError, match="corrupt archive cifar-10-python.tar.gz"):
        prepare_dataset("cifar10", tmp_path, source=source)
    folder = tmp_path / "cifar10"
    assert not (folder / "meta.json").exists()
    assert not list(folder.glob("*.npz"))
    assert not list(folder.glob(".extract-*"))
    assert _leftovers(tmp_path) == []


def test_cifar10_resumes_partial_download(
    server: FileServer, cifar_archive, tmp_path: Path
) -> None:
    blob = cifar_archive[0]
    half = len(blob) // 2
    server.files["/cifar.tgz"] = blob
    part = tmp_path / "cifar10" / "downloads" / "cifar-10-python.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(blob[:half])
    meta_path = prepare_dataset(
        "cifar10", tmp_path, source={"url": server.url("/cifar.tgz"), "md5": md5(blob)}
    )
    assert server.requests == [("/cifar.tgz", f"bytes={half}-")]
    archive = part.with_name("cifar-10-python.tar.gz")
    assert md5(archive.read_bytes()) == md5(blob)
    assert not part.exists()
    assert len(load_split(meta_path, "test")) == CIFAR_TEST


def test_cifar10_archive_without_cifar10s_batches(
    server: FileServer, unpatched_cifar_archive, tmp_path: Path
) -> None:
    """An archive that matches its configured checksum but whose batches are not CIFAR-10's
    (torchvision checks each against the real dataset's md5): one clear line, nothing left."""
    blob = unpatched_cifar_archive[0]
    server.files["/cifar.tgz"] = blob
    source = {"url": server.url("/cifar.tgz"), "md5": md5(blob)}
    with pytest.raises(DataError) as e:
        prepare_dataset("cifar10", tmp_path, source=source)
    message = str(e.value)
    assert message.startswith(f"cifar-10-python.tar.gz from {source['url']} does not hold CIFAR-10's batches")
    assert message.endswith("(archive removed; re-run to download again)") and "\n" not in message
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# cifar100
# ---------------------------------------------------------------------------


def make_cifar100_archive() -> tuple[bytes, dict, dict, dict[str, str]]:
    """A small cifar-100-python.tar.gz in torchvision's layout (pickled ``train``, ``test`` and
    ``meta`` in cifar-100-python/, labels under ``fine_labels``); also each member's md5."""
    rng = np.random.default_rng(100)

    def split(n: int) -> dict:
        return {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                "fine_labels": [int(v) for v in rng.integers(0, 100, size=n)],
                "coarse_labels": [int(v) for v in rng.integers(0, 20, size=n)],
                "filenames": [f"img{i}.png" for i in range(n)]}

    train, test = split(7), split(3)
    meta = {"fine_label_names": [f"fine{k}" for k in range(100)], "coarse_label_names": [f"c{k}" for k in range(20)]}
    archive, checksums = pickled_tar_gz("cifar-100-python", [("train", train), ("test", test), ("meta", meta)])
    return archive, train, test, checksums


@pytest.fixture
def cifar100_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fabricated archive as a file:// mirror, with torchvision's CIFAR100 told its members' md5."""
    from torchvision.datasets import CIFAR100

    blob, train, test, checksums = make_cifar100_archive()
    monkeypatch.setattr(CIFAR100, "train_list", [["train", checksums["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", checksums["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": checksums["meta"]})
    mirror = tmp_path / "mirror" / "cifar-100-python.tar.gz"
    mirror.parent.mkdir()
    mirror.write_bytes(blob)
    return blob, train, test, mirror.as_uri()


def test_cifar100_from_a_file_mirror(cifar100_archive, tmp_path: Path) -> None:
    blob, train, test, url = cifar100_archive
    meta_path = prepare_dataset("cifar100", tmp_path / "data", source={"url": url, "md5": md5(blob)})
    meta = json.loads(meta_path.read_text())
    assert (meta["num_classes"], meta["image_shape"], meta["n_train"], meta["n_test"]) == (100, [3, 32, 32], 7, 3)
    assert meta["source"] == {"url": url, "md5": md5(blob)}
    for split, raw in (("train", train), ("test", test)):
        ds = load_split(meta_path, split)
        assert ds.num_classes == 100 and ds.labels.tolist() == raw["fine_labels"]  # the fine labels, not the coarse
        # images[n, c, h, w] == data[n][c * 1024 + h * 32 + w]
        for n, c, h, w in ((0, 0, 0, 0), (1, 2, 5, 9), (len(raw["data"]) - 1, 1, 31, 17)):
            assert int(ds.images[n, c, h, w]) == int(raw["data"][n][c * 1024 + h * 32 + w])
    assert not list((tmp_path / "data" / "cifar100").glob(".extract-*"))


def test_cifar100_checksum_mismatch_and_foreign_archive(cifar100_archive, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR100

    blob, _, _, url = cifar100_archive
    with pytest.raises(DataError) as e:
        prepare_dataset("cifar100", tmp_path / "data", source={"url": url, "md5": "0" * 32})
    assert str(e.value) == (f"checksum mismatch for cifar-100-python.tar.gz: expected md5 {'0' * 32}, got {md5(blob)} "
                            "(file removed; re-run to download again)")
    assert _leftovers(tmp_path / "data") == []
    monkeypatch.setattr(CIFAR100, "train_list", [["train", "1" * 32]])  # torchvision: not CIFAR-100's own batch
    with pytest.raises(DataError) as e:
        prepare_dataset("cifar100", tmp_path / "data", source={"url": url, "md5": md5(blob)})
    assert str(e.value) == (f"cifar-100-python.tar.gz from {url} does not hold CIFAR-100's batches (torchvision: "
                            "Dataset not found or corrupted) (archive removed; re-run to download again)")
    assert _leftovers(tmp_path / "data") == []


# ---------------------------------------------------------------------------
# mnist
# ---------------------------------------------------------------------------


def _idx_gz(array: np.ndarray) -> bytes:
    """``array`` (uint8) as a gzipped IDX file, the format of MNIST's downloads: magic 0x08
    (unsigned byte) and the number of dimensions, each dimension as a big-endian int32, the data."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


@pytest.fixture
def mnist_mirror(tmp_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Four fabricated MNIST downloads on a file:// mirror, and the source that names them."""
    rng = np.random.default_rng(28)
    arrays = {"train_images": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, size=6, dtype=np.uint8),
              "test_images": rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, size=4, dtype=np.uint8)}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = {}
    for key, array in arrays.items():
        blob = _idx_gz(array)
        (mirror / f"{key}.gz").write_bytes(blob)
        source[key] = {"url": (mirror / f"{key}.gz").as_uri(), "md5": md5(blob)}
    return source, arrays


def test_mnist_from_a_file_mirror(mnist_mirror, tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    source, arrays = mnist_mirror
    meta_path = prepare_dataset("mnist", tmp_path / "data", source=source)
    meta = json.loads(meta_path.read_text())
    assert (meta["num_classes"], meta["image_shape"], meta["n_train"], meta["n_test"]) == (10, [1, 28, 28], 6, 4)
    assert meta["source"] == source
    downloads = tmp_path / "data" / "mnist" / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == sorted(name for name, _ in MNIST.resources)
    for split in ("train", "test"):
        ds = load_split(meta_path, split)
        assert ds.images.shape == (len(arrays[f"{split}_labels"]), 1, 28, 28)
        assert np.array_equal(ds.images[:, 0].numpy(), arrays[f"{split}_images"])
        assert ds.labels.tolist() == arrays[f"{split}_labels"].tolist()
    assert not list((tmp_path / "data" / "mnist").glob(".extract-*"))
    # without a mirror: torchvision's first mirror and md5 of each file
    from rslib.data.prepare import _resolve_remote

    assert _resolve_remote(None, MNIST.mirrors[0] + MNIST.resources[2][0], MNIST.resources[2][1], "mnist") == {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "md5": "9fb629c4189551a2d022fa330f9573f3"}


def test_mnist_checksum_mismatch_and_files_that_are_not_mnist(mnist_mirror, tmp_path: Path) -> None:
    source, arrays = mnist_mirror
    wrong = {**source, "test_labels": {**source["test_labels"], "md5": "0" * 32}}
    with pytest.raises(DataError) as e:
        prepare_dataset("mnist", tmp_path / "data", source=wrong)
    assert str(e.value) == (f"checksum mismatch for t10k-labels-idx1-ubyte.gz: expected md5 {'0' * 32}, got "
                            f"{source['test_labels']['md5']} (file removed; re-run to download again)")
    assert not (tmp_path / "data" / "mnist" / "meta.json").exists() and not list((tmp_path / "data").rglob("*.npz"))
    # images given as labels: torchvision's parser refuses a 3-d label file
    swapped = {**source, "test_labels": source["test_images"]}
    with pytest.raises(DataError) as e:
        prepare_dataset("mnist", tmp_path / "data", source=swapped)
    assert str(e.value) == ("t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz do not hold MNIST's test images "
                            "and labels (torchvision: x should have 1 dimension instead of 3) (files removed; re-run "
                            "to download again)")
    assert not (tmp_path / "data" / "mnist" / "meta.json").exists()
    assert not (tmp_path / "data" / "mnist" / "downloads" / "t10k-labels-idx1-ubyte.gz").exists()
    with pytest.raises(DataError, match=r"mnist: unknown source keys \['train'\] \(allowed: train_images, "
                                        r"train_labels, test_images, test_labels\)"):
        prepare_dataset("mnist", tmp_path / "data", source={"train": {}})


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet110"])
def test_models_take_mnist_and_cifar100(arch: str) -> None:
    """28 x 28 grey images and 100 classes: the CIFAR architectures pool adaptively."""
    from rslib.models.architectures import build_model

    for name in ("mnist", "cifar100"):
        info = dataset_info(name)
        model = build_model(arch, info.num_classes, info.image_shape[0], info.mean, info.std).eval()
        with torch.no_grad():
            logits = model(torch.rand(2, *info.image_shape))
        assert logits.shape == (2, info.num_classes)


# ---------------------------------------------------------------------------
# download() directly
# ---------------------------------------------------------------------------


def test_download_starts_over_when_range_ignored(
    non_resuming_server: FileServer, tmp_path: Path
) -> None:
    blob = bytes(range(256)) * 40
    non_resuming_server.files["/f.bin"] = blob
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"x" * 100)  # not a prefix of blob
    download(non_resuming_server.url("/f.bin"), dest, md5=md5(blob))
    assert non_resuming_server.requests == [("/f.bin", "bytes=100-")]
    assert dest.read_bytes() == blob
    assert not (tmp_path / "f.bin.part").exists()


def test_download_sha256_and_existing_file(server: FileServer, tmp_path: Path) -> None:
    blob = b"hello world" * 1000
    server.files["/h.txt"] = blob
    dest = tmp_path / "sub" / "h.txt"
    digest = hashlib.sha256(blob).hexdigest()
    assert download(server.url("/h.txt"), dest, sha256=digest) == dest
    assert dest.read_bytes() == blob
    n_requests = len(server.requests)
    download(server.url("/h.txt"), dest, sha256=digest)
    assert len(server.requests) == n_requests  # existing verified file: no new request
    with pytest.raises(DataError, match="checksum mismatch for h2.txt: expected sha256"):
        download(server.url("/h.txt"), tmp_path / "h2.txt", sha256="f" * 64)
    assert not (tmp_path / "h2.txt").exists() and not (tmp_path / "h2.txt.part").exists()


def test_download_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    blob = b"abc" * 5000
    src.write_bytes(blob)
    dest = tmp_path / "out" / "copy.bin"
    assert download(src.as_uri(), dest, md5=md5(blob)) == dest
    assert dest.read_bytes() == blob
    assert not dest.with_name("copy.bin.part").exists()
    missing = (tmp_path / "nope.bin").as_uri()
    with pytest.raises(DataError) as e:
        download(missing, tmp_path / "nope.bin.out")
    assert missing in str(e.value) and "download failed" in str(e.value)


def test_download_network_error_names_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"  # nothing listens there any more
    with pytest.raises(DataError) as e:
        download(url, tmp_path / "x.bin")
    assert str(e.value).startswith(f"download failed for {url}: ")
    assert not (tmp_path / "x.bin").exists()


def test_download_http_404(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url("/missing"), tmp_path / "m.bin")


# ---------------------------------------------------------------------------
# extract_archive()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind, target", [
    ("../evil.txt", tarfile.REGTYPE, ""),
    ("/tmp/rslib-test-absolute-evil.txt", tarfile.REGTYPE, ""),
    ("d/link", tarfile.SYMTYPE, "../../evil.txt"),
    ("d/fifo", tarfile.FIFOTYPE, ""),
])
def test_extract_archive_rejects_unsafe_member(tmp_path: Path, name: str, kind: bytes, target: str) -> None:
    """Members that would land outside the target (or are devices) are refused before anything
    is written: torchvision extracts tars unfiltered before Python 3.14."""
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        ok = tarfile.TarInfo("d/fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        info.size = 3 if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(b"bad") if kind == tarfile.REGTYPE else None)
    into = tmp_path / "out"
    with pytest.raises(DataError, match="unsafe archive evil.tar") as e:
        extract_archive(archive, into)
    assert "\n" not in str(e.value)
    assert not into.exists()
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/rslib-test-absolute-evil.txt").exists()


def test_extract_archive_into_existing_folder_removes_only_its_own_files(tmp_path: Path) -> None:
    archive = tmp_path / "half.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(50):
            payload = np.random.default_rng(i).bytes(4000)  # incompressible: truncation hits a member
            info = tarfile.TarInfo(f"m/{i}.bin")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    archive.write_bytes(archive.read_bytes()[:100_000])
    into = tmp_path / "out"
    into.mkdir()
    (into / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="corrupt archive half.tar.gz"):
        extract_archive(archive, into)
    assert sorted(p.name for p in into.iterdir()) == ["keep.txt"]


def test_extract_zip_and_truncated_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/one.txt", "1")
    extract_archive(archive, tmp_path / "ok")
    assert (tmp_path / "ok" / "d" / "one.txt").read_text() == "1"
    broken = tmp_path / "b.zip"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match="corrupt archive b.zip"):
        extract_archive(broken, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------
# svhn
# ---------------------------------------------------------------------------


def _svhn_mat(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    y[1, 0] = 3
    buf = io.BytesIO()
    savemat(buf, {"X": x, "y": y})
    return buf.getvalue(), x, y


def test_svhn_end_to_end(server: FileServer, tmp_path: Path) -> None:
    train_blob, x_train, y_train = _svhn_mat(6, seed=1)
    test_blob, x_test, y_test = _svhn_mat(4, seed=2)
    server.files["/train_32x32.mat"] = train_blob
    server.files["/test_32x32.mat"] = test_blob
    source = {
        "train": {"url": server.url("/train_32x32.mat"), "md5": md5(train_blob)},
        "test": {"url": server.url("/test_32x32.mat"), "md5": md5(test_blob)},
    }
    meta_path = prepare_dataset("svhn", tmp_path, source=source)
    meta = json.loads(meta_path.read_text())
    assert (meta["n_train"], meta["n_test"]) == (6, 4)
    assert meta["source"]["train"]["md5"] == md5(train_blob)
    assert (tmp_path / "svhn" / "downloads" / "test_32x32.mat").is_file()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        ds = load_split(meta_path, split)
        assert ds.images.shape == (x.shape[3], 3, 32, 32)
        # images[n, c, h, w] == X[h, w, c, n]
        for n, c, h, w in ((0, 0, 0, 0), (1, 2, 5, 9), (x.shape[3] - 1, 1, 31, 17)):
            assert int(ds.images[n, c, h, w]) == int(x[h, w, c, n])
        expected = [0 if v == 10 else int(v) for v in y[:, 0]]
        assert ds.labels.tolist() == expected
        assert ds.labels[0] == 0 and ds.labels[1] == 3
        assert int(ds.labels.max()) <= 9


def test_svhn_checksum_mismatch_and_corrupt_file(server: FileServer, tmp_path: Path) -> None:
    train_blob, _, _ = _svhn_mat(3, seed=1)
    test_blob, _, _ = _svhn_mat(2, seed=2)
    server.files["/train_32x32.mat"] = train_blob
    server.files["/test_32x32.mat"] = test_blob
    test_source = {"url": server.url("/test_32x32.mat"), "md5": md5(test_blob)}
    wrong = {"train": {"url": server.url("/train_32x32.mat"), "md5": "0" * 32}, "test": test_source}
    with pytest.raises(DataError, match=f"checksum mismatch for train_32x32.mat: expected md5 {'0' * 32}, "
                                        f"got {md5(train_blob)}"):
        prepare_dataset("svhn", tmp_path, source=wrong)
    assert _leftovers(tmp_path) == []
    garbage = b"not a MATLAB file" * 10
    server.files["/garbage.mat"] = garbage
    corrupt = {"train": {"url": server.url("/garbage.mat"), "md5": md5(garbage)}, "test": test_source}
    with pytest.raises(DataError) as e:
        prepare_dataset("svhn", tmp_path, source=corrupt)
    assert str(e.value).startswith("corrupt file train_32x32.mat: ") and "\n" not in str(e.value)
    assert str(e.value).endswith("(file removed; re-run to download again)")
    assert _leftovers(tmp_path) == []


def test_svhn_source_must_name_splits(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"svhn: unknown source keys \['extra'\] \(allowed: train, test\)"):
        prepare_dataset("svhn", tmp_path, source={"extra": {}})
    with pytest.raises(DataError, match=r"svhn train: unknown source keys \['sha1'\]"):
        prepare_dataset("svhn", tmp_path, source={"train": {"sha1": "x"}})
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# imagenet
# ---------------------------------------------------------------------------


def _image_tree(root: Path, classes: dict[str, tuple[str, ...]]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, names in classes.items():
        for i, cls in enumerate(names):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for j in range(2):
                pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{j}.png")
            (folder / "notes.txt").write_text("not an image")
    return root


def test_imagenet_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    missing = tmp_path / "no-imagenet"
    with pytest.raises(DataError) as e:
        prepare_dataset("imagenet", tmp_path / "data", source={"root": str(missing)})
    assert str(e.value) == (
        f"ImageNet folder not found: '{missing}'. Download ILSVRC2012 yourself and set "
        "datasets.imagenet.source.root in the config (or IMAGENET_DIR, when that is empty) to a folder holding "
        "train/ and val/ in ImageFolder layout (one sub-folder per class)."
    )
    with pytest.raises(DataError, match="ImageNet folder not found: ''"):
        prepare_dataset("imagenet", tmp_path / "data")
    assert not (tmp_path / "data" / "imagenet" / "meta.json").exists()


def test_imagenet_imagefolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _image_tree(tmp_path / "ilsvrc", {"train": ("n01", "n02"), "val": ("n01", "n02")})
    monkeypatch.setenv("IMAGENET_DIR", str(root))
    meta_path = prepare_dataset("imagenet", tmp_path / "data")
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "imagefolder"
    assert meta["root"] == str(root.resolve())
    assert (meta["num_classes"], meta["n_train"], meta["n_test"]) == (2, 4, 4)
    assert meta["image_shape"] == [3, 224, 224]

    train = load_split(meta_path, "train")
    assert len(train) == 4 and train.classes == ["n01", "n02"]
    x, y = train[3]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y == 1
    test = load_split(meta_path, "test")
    assert Path(test.root).name == "val" and len(test) == 4
    assert test[0][0].shape == (3, 224, 224)


def test_imagenet_class_mismatch(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "ilsvrc", {"train": ("a", "b"), "val": ("a", "c")})
    with pytest.raises(DataError, match="class folders differ"):
        prepare_dataset("imagenet", tmp_path / "data", source={"root": str(root)})
    assert not (tmp_path / "data" / "imagenet" / "meta.json").exists()


def test_imagenet_class_folder_without_images(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "ilsvrc", {"train": ("a", "b"), "val": ("a", "b")})
    for image in (root / "val" / "b").glob("*.png"):
        image.unlink()
    with pytest.raises(DataError) as e:
        prepare_dataset("imagenet", tmp_path / "data", source={"root": str(root)})
    assert str(e.value).startswith(f"ImageNet folder '{root.resolve()}': Found no valid file for the classes b.")
    assert "\n" not in str(e.value)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataError, match="Couldn't find any class folder"):
        prepare_dataset("imagenet", tmp_path / "data", source={"root": str(tmp_path / "empty")})
    assert not (tmp_path / "data" / "imagenet" / "meta.json").exists()


# ---------------------------------------------------------------------------
# evaluation_indices
# ---------------------------------------------------------------------------


def test_evaluation_indices_are_the_papers_subsets() -> None:
    # 000 Tables 5-7: "the first 500 test images of Cifar-10"
    assert evaluation_indices(10_000, 0, 1, 500) == list(range(500))
    # ImageNet: every 100th validation image (the folder is sorted by class)
    idx = evaluation_indices(50_000, 0, 100, 500)
    assert idx[:3] == [0, 100, 200] and idx[-1] == 49_900 and len(idx) == 500
    assert evaluation_indices(10_000, 5, 20, 3) == [5, 25, 45]
    assert evaluation_indices(10_000, np.int64(0), np.int64(20), 2) == [0, 20]
    assert evaluation_indices(10, 0, 1, 10) == list(range(10))


@pytest.mark.parametrize(
    "args, message",
    [
        ((100, 0, 0, 5), "stride must be an integer >= 1"),
        ((100, 0, 2.5, 5), "stride must be an integer >= 1"),
        ((100, -1, 1, 5), "start must be an integer >= 0"),
        ((100, 0, 1, 0), "count must be an integer >= 1"),
        ((500, 0, 5, 101), "needs 101 test images .* has only 100: lower evaluation.count"),
        ((500, 450, 1, 51), "has only 50"),
    ],
)
def test_evaluation_indices_refuse_bad_or_too_large_subsets(args, message) -> None:
    with pytest.raises(DataError, match=message):
        evaluation_indices(*args)
    # one line, for the workflow's error output
    try:
        evaluation_indices(*args)
    except DataError as exc:
        assert "\n" not in str(exc)


def test_heldout_split_holds_out_the_last_training_images():
    from rslib.data.load import heldout_split

    kept, held = heldout_split(1297, 200)
    assert held == list(range(1097, 1297))  # SWEEN's rule: the last 200 training images
    assert kept == list(range(1097))
    assert heldout_split(1297, 0) == (list(range(1297)), [])
    with pytest.raises(DataError, match="cannot hold out 1297 of 1297"):
        heldout_split(1297, 1297)


def test_registered_training_set_size_matches_the_prepared_digits(digits_meta: Path) -> None:
    """The cost estimate uses DatasetInfo.train_images instead of a prepared dataset."""
    meta = json.loads(digits_meta.read_text())
    assert dataset_info("digits").train_images == meta["n_train"] == 1297
    assert dataset_info("cifar10").train_images == 50000 and dataset_info("svhn").train_images == 73257
