"""Datasets of the user's own (``datasets.<name>.kind: npz`` or ``imagefolder``): the registry
entry built from the configuration and the files' headers or names, the preparation into our npz
format, loading and the evaluation subset, and each refusal as its one line. The files are
fabricated here (numpy arrays, tiny PNGs written by Pillow)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rslib.data.load import evaluation_subset, load_split
from rslib.data.prepare import prepare_dataset
from rslib.data.registry import IMG_EXTENSIONS, dataset_info, dataset_source, imagefolder_listing
from rslib.experiment.config import with_defaults
from rslib.experiment.plan import Plan
from rslib.models.architectures import build_model
from rslib.runtime.errors import ConfigError, DataError
from workflow_helpers import REPO

SCHEMA = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())


def write_npz(path: Path, n: int, seed: int, classes: int = 3, shape: tuple[int, ...] = (1, 6, 6), **arrays) -> Path:
    """An npz file in the documented layout: images uint8 N x C x H x W, labels int64 (every class
    among the first ``classes`` images); ``arrays`` replace or add arrays."""
    rng = np.random.default_rng(seed)
    content = {"images": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
               "labels": np.arange(n, dtype=np.int64) % classes}
    content.update(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **content)
    return path


@pytest.fixture
def npz_entry(tmp_path: Path) -> dict:
    """``datasets.mine`` of a 3-class grey npz dataset: 9 training and 5 test images of 6 x 6."""
    return {"kind": "npz", "train": str(write_npz(tmp_path / "mine" / "train.npz", 9, seed=1)),
            "test": str(write_npz(tmp_path / "mine" / "test.npz", 5, seed=2)),
            "classes": 3, "mean": [0.5], "std": [0.25]}


def write_tree(root: Path, splits: dict[str, dict[str, list[tuple[int, int]]]], mode: str = "RGB") -> Path:
    """An ImageFolder tree: ``splits[split][class]`` lists the (width, height) of its PNGs; each
    class folder also holds a text file (not an image) and its last image sits in a sub-folder
    with an upper-case extension (torchvision finds both)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for name, sizes in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            (folder / "notes.txt").write_text("not an image")
            for j, (width, height) in enumerate(sizes):
                shape = (height, width, 3) if mode == "RGB" else (height, width)
                target = folder / f"img{j}.png" if j < len(sizes) - 1 else folder / "nested" / f"IMG{j}.PNG"
                target.parent.mkdir(exist_ok=True)
                Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(target, format="PNG")
    return root


@pytest.fixture
def folder_entry(tmp_path: Path) -> dict:
    """``datasets.pets``: 2 RGB classes of differently sized images, cropped to 8 x 8."""
    root = write_tree(tmp_path / "pets", {
        "train": {"cat": [(10, 12), (16, 9), (8, 8)], "dog": [(12, 10), (9, 14)]},
        "test": {"cat": [(11, 11)], "dog": [(20, 10), (10, 20)]},
    })
    return {"kind": "imagefolder", "root": str(root), "classes": 2, "mean": [0.5, 0.5, 0.5],
            "std": [0.2, 0.2, 0.2], "image_size": 8}


# ---------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------


def test_npz_dataset_is_known_from_its_headers_then_prepared_loaded_and_evaluated(npz_entry, tmp_path: Path) -> None:
    info = dataset_info("mine", npz_entry)
    assert (info.num_classes, info.image_shape, info.train_images, info.test_images) == (3, (1, 6, 6), 9, 5)
    assert (info.mean, info.std, info.format) == ((0.5,), (0.25,), "npz")
    assert info.user.kind == "npz" and info.user.train == str(Path(npz_entry["train"]).resolve())

    source = dataset_source("mine", {**npz_entry, "arch": "small_cnn", "sigmas": [0.25], "source": {}})
    assert source == npz_entry  # what the data rule prepares from: the entry's dataset keys only
    meta_path = prepare_dataset("mine", tmp_path / "data", source=source)
    meta = json.loads(meta_path.read_text())
    assert (meta["name"], meta["format"], meta["num_classes"], meta["image_shape"]) == ("mine", "npz", 3, [1, 6, 6])
    assert meta["source"]["train"]["path"] == info.user.train and len(meta["source"]["test"]["sha256"]) == 64
    with np.load(npz_entry["test"]) as original:
        test = load_split(meta_path, "test")
        assert np.array_equal(test.images.numpy(), original["images"])
        assert test.labels.tolist() == original["labels"].tolist() and test.num_classes == 3

    subset = evaluation_subset(str(meta_path), {"start": 1, "stride": 2, "count": 2})
    assert subset == [1, 3]
    model = build_model("small_cnn", info.num_classes, info.image_shape[0], info.mean, info.std).eval()
    with torch.no_grad():
        logits = model(torch.stack([test[i][0] for i in subset]))
    assert logits.shape == (2, 3)
    with pytest.raises(DataError) as e:  # a test split that shrank after the plan checked it
        evaluation_subset(str(meta_path), {"start": 0, "stride": 1, "count": 6})
    assert str(e.value) == ("datasets.mine.evaluation: evaluation subset needs 6 test images (start 0, stride 1) but "
                            "the test split of 5 images has only 5: lower evaluation.count")

    before = meta_path.stat().st_mtime_ns
    assert prepare_dataset("mine", tmp_path / "data", source=source) == meta_path
    assert meta_path.stat().st_mtime_ns == before  # prepared already: nothing done
    write_npz(Path(npz_entry["test"]), 7, seed=3)  # the user's file replaced: prepared again
    prepare_dataset("mine", tmp_path / "data", source=source)
    assert json.loads(meta_path.read_text())["n_test"] == 7 and len(load_split(meta_path, "test")) == 7


def test_npz_labels_of_other_integer_types_and_three_channels(tmp_path: Path) -> None:
    entry = {"kind": "npz", "classes": 2, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.2],
             "train": str(write_npz(tmp_path / "train.npz", 4, seed=1, classes=2, shape=(3, 5, 7),
                                    labels=np.array([0, 1, 1, 0], dtype=np.uint8))),
             "test": str(write_npz(tmp_path / "test.npz", 2, seed=2, classes=2, shape=(3, 5, 7)))}
    meta_path = prepare_dataset("rgb", tmp_path / "data", source=entry)
    train = load_split(meta_path, "train")
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 1, 0]
    assert train.images.shape == (4, 3, 5, 7)


# ---------------------------------------------------------------------------
# imagefolder
# ---------------------------------------------------------------------------


def test_imagefolder_listing_is_torchvisions(folder_entry) -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS as TORCHVISION_EXTENSIONS
    from torchvision.datasets.folder import find_classes, make_dataset

    assert IMG_EXTENSIONS == TORCHVISION_EXTENSIONS
    for split in ("train", "test"):
        folder = Path(folder_entry["root"]) / split
        classes, files = imagefolder_listing(folder, "datasets.pets")
        names, index = find_classes(folder)
        assert classes == names
        assert [(path, index[name]) for path, name in files] == make_dataset(str(folder), index, TORCHVISION_EXTENSIONS)
    assert any(path.endswith(".PNG") for path, _ in files)


def test_imagefolder_dataset_is_resized_centre_cropped_and_evaluated(folder_entry, tmp_path: Path) -> None:
    from PIL import Image
    from torchvision import transforms

    info = dataset_info("pets", folder_entry)
    assert (info.num_classes, info.image_shape, info.train_images, info.test_images) == (2, (3, 8, 8), 5, 3)
    meta_path = prepare_dataset("pets", tmp_path / "data", source=folder_entry)
    meta = json.loads(meta_path.read_text())
    assert (meta["format"], meta["image_shape"], meta["n_train"], meta["n_test"]) == ("npz", [3, 8, 8], 5, 3)
    assert meta["source"]["image_size"] == 8 and meta["source"]["test"].endswith("pets/test")

    test = load_split(meta_path, "test")
    assert test.labels.tolist() == [0, 1, 1]  # cat, dog, dog: the class folders' order
    # image 1 = test/dog/img0.png (20 x 10): shorter side to 8, then the central 8 x 8
    with Image.open(Path(folder_entry["root"]) / "test" / "dog" / "img0.png") as image:
        expected = np.asarray(transforms.CenterCrop(8)(transforms.Resize(8)(image.convert("RGB"))))
    assert np.array_equal(test.images[1].numpy(), expected.transpose(2, 0, 1))
    subset = evaluation_subset(str(meta_path), {"start": 0, "stride": 2, "count": 2})
    model = build_model("resnet20", 2, 3, info.mean, info.std).eval()
    with torch.no_grad():
        assert model(torch.stack([test[i][0] for i in subset])).shape == (2, 2)


def test_imagefolder_grey_with_a_val_folder(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "grey", {"train": {"a": [(6, 6)], "b": [(7, 9)], "c": [(9, 7)]},
                                          "val": {"a": [(6, 6)], "c": [(12, 6)]}}, mode="L")
    entry = {"kind": "imagefolder", "root": str(root), "classes": 3, "mean": [0.5], "std": [0.3], "image_size": 4}
    meta_path = prepare_dataset("grey", tmp_path / "data", source=entry)
    test = load_split(meta_path, "test")
    assert test.images.shape == (2, 1, 4, 4) and test.labels.tolist() == [0, 2]  # val/ lacks b: labels keep train's


# ---------------------------------------------------------------------------
# Refusals: one line each, naming the key
# ---------------------------------------------------------------------------


def _without(entry: dict, *keys: str) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


@pytest.mark.parametrize("change, message", [
    (lambda e, d: _without(e, "mean"),
     "datasets.mine: mean and std are required for a dataset of your own (per channel, of its [0, 1] pixels): the "
     "model's first layer normalises its input with them"),
    (lambda e, d: _without(e, "classes"),
     "datasets.mine: classes is required for a dataset of your own: the number of classes (labels 0 .. classes - 1)"),
    (lambda e, d: _without(e, "test"), "datasets.mine: kind npz needs train and test; test is missing"),
    (lambda e, d: {**e, "kind": "csv"}, "datasets.mine.kind: expected npz or imagefolder, got 'csv'"),
    (lambda e, d: {**e, "root": str(d)}, "datasets.mine.root: kind npz reads train and test, not root"),
    (lambda e, d: {**e, "source": {"url": "x"}},
     "datasets.mine.source: a dataset of your own is read from train and test; it takes no source"),
    (lambda e, d: {**e, "std": [0.2, 0.2]}, "datasets.mine: mean has 1 values but std has 2; give one per channel"),
    (lambda e, d: {**e, "test": str(d / "missing.npz")}, "datasets.mine.test: {d}/missing.npz not found"),
    (lambda e, d: {**e, "test": str(d / "mine")}, "datasets.mine.test: cannot read {d}/mine: Is a directory"),
    (lambda e, d: {**e, "test": str(d / "notes.npz")},
     "datasets.mine.test: {d}/notes.npz is not a readable .npz file (numpy.savez): File is not a zip file"),
    (lambda e, d: {**e, "test": str(write_npz(d / "hwc.npz", 2, 0, shape=(6, 6, 1)))},
     "datasets.mine.test: images in {d}/hwc.npz have shape (2, 6, 6, 1); expected N x C x H x W with C = 1 (one "
     "channel per mean value) (channels last: store images.transpose(0, 3, 1, 2))"),
    (lambda e, d: {**e, "test": str(write_npz(d / "nhw.npz", 2, 0, shape=(6, 6)))},
     "datasets.mine.test: images in {d}/nhw.npz have shape (2, 6, 6); expected N x C x H x W with C = 1 (one "
     "channel per mean value) (grey N x H x W: store images[:, None])"),
    (lambda e, d: {**e, "test": str(write_npz(d / "float.npz", 2, 0, images=np.zeros((2, 1, 6, 6), np.float32)))},
     "datasets.mine.test: images in {d}/float.npz are float32; expected uint8 pixels 0..255"),
    (lambda e, d: {**e, "test": str(write_npz(d / "few.npz", 2, 0, labels=np.zeros(3, np.int64)))},
     "datasets.mine.test: labels in {d}/few.npz are int64 of shape (3,); expected integers of shape (2,), one per "
     "image"),
    (lambda e, d: {**e, "test": str(write_npz(d / "flt.npz", 2, 0, labels=np.zeros(2, np.float64)))},
     "datasets.mine.test: labels in {d}/flt.npz are float64 of shape (2,); expected integers of shape (2,), one per "
     "image"),
    (lambda e, d: {**e, "test": str(d / "x.npz")},
     "datasets.mine.test: {d}/x.npz holds no 'labels' array (found ['images', 'y']); expected images (uint8 "
     "N x C x H x W) and labels (integers, length N)"),
    (lambda e, d: {**e, "test": str(write_npz(d / "big.npz", 2, 0, shape=(1, 7, 7)))},
     "datasets.mine: train images are 1x6x6 but test images 1x7x7; both splits need one C x H x W"),
])
def test_npz_entry_refused_when_read(npz_entry, tmp_path: Path, change, message) -> None:
    """What the plan reads before any job (the entry, the arrays' headers) refused in one line."""
    (tmp_path / "notes.npz").write_text("not a zip")
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 1, 6, 6), np.uint8), y=np.zeros(2))
    entry = change(npz_entry, tmp_path)
    with pytest.raises(DataError) as e:
        dataset_info("mine", entry)
    assert str(e.value) == message.format(d=tmp_path)
    with pytest.raises(DataError) as e:  # the preparation reads the same way, and writes nothing
        prepare_dataset("mine", tmp_path / "data", source=entry)
    assert str(e.value) == message.format(d=tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 2, 3, 0, 1, 2, 0, 1]),
     "datasets.mine.classes: 3, but the train labels of {train} run from 0 to 3; labels must be 0 .. 2"),
    (np.array([0, 1, 0, 1, 0, 1, 0, 1, 0]),
     "datasets.mine.classes: 3, but the train labels of {train} use only 2 classes (none is 2)"),
    (np.array([0, 1, 2, 0, 1, 2, 0, 1, -1]),
     "datasets.mine.classes: 3, but the train labels of {train} run from -1 to 2; labels must be 0 .. 2"),
])
def test_npz_labels_refused_against_classes_at_preparation(npz_entry, tmp_path: Path, labels, message) -> None:
    write_npz(Path(npz_entry["train"]), 9, seed=1, labels=labels)
    dataset_info("mine", npz_entry)  # the headers are fine: labels are read when the data is prepared
    with pytest.raises(DataError) as e:
        prepare_dataset("mine", tmp_path / "data", source=npz_entry)
    assert str(e.value) == message.format(train=Path(npz_entry["train"]).resolve())
    assert not (tmp_path / "data" / "mine" / "meta.json").exists() and not list((tmp_path / "data").rglob("*.npz"))


def test_imagefolder_entry_refusals(folder_entry, tmp_path: Path) -> None:
    root = Path(folder_entry["root"]).resolve()

    def refused(entry: dict) -> str:
        with pytest.raises(DataError) as e:
            dataset_info("pets", entry)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert refused({**folder_entry, "classes": 3}) == (
        f"datasets.pets.classes: 3, but {root}/train has 2 class folders (cat, dog)")
    assert refused(_without(folder_entry, "image_size")) == (
        "datasets.pets: kind imagefolder needs root and image_size; image_size is missing")
    assert refused({**folder_entry, "root": str(tmp_path / "nope")}) == (
        f"datasets.pets.root: {tmp_path}/nope is not a folder")
    assert refused({**folder_entry, "mean": [0.5, 0.5], "std": [0.2, 0.2]}) == (
        "datasets.pets.mean: 2 values, but an imagefolder dataset is grey (1 channel) or RGB (3 channels)")
    (root / "val").mkdir()
    assert refused(folder_entry) == f"datasets.pets.root: {root} has both test/ and val/; keep the one to evaluate on"
    (root / "val").rmdir()
    (root / "test" / "bird").mkdir()
    assert refused(folder_entry) == (
        f"datasets.pets.root: {root}/test has class folders that {root}/train lacks: ['bird']")
    (root / "test" / "bird").rmdir()
    (root / "train" / "bird").mkdir()
    assert refused({**folder_entry, "classes": 3}) == (
        f"datasets.pets.root: class folder {root}/train/bird holds no image ({', '.join(IMG_EXTENSIONS)})")
    (root / "train" / "bird").rmdir()
    (root / "test" / "dog" / "img0.png").write_bytes(b"not a png")  # found by name; unreadable when prepared
    with pytest.raises(DataError) as e:
        prepare_dataset("pets", tmp_path / "data", source=folder_entry)
    assert str(e.value) == (f"datasets.pets.root: cannot read image {root}/test/dog/img0.png: cannot identify image "
                            f"file '{root}/test/dog/img0.png'")
    assert not (tmp_path / "data" / "pets" / "meta.json").exists() and not list((tmp_path / "data").rglob("*.npz"))


def test_names_registered_or_not() -> None:
    with pytest.raises(DataError) as e:
        dataset_info("cifar10", {"arch": "resnet110", "kind": "npz"})
    assert str(e.value) == ("datasets.cifar10.kind: cifar10 is a registered dataset (its classes, mean and std are in "
                            "rslib/data/registry.py); give a dataset of your own another name")
    with pytest.raises(DataError) as e:
        dataset_info("mnist2", {"arch": "small_cnn", "sigmas": [0.25]})
    assert str(e.value) == ("datasets.mnist2: 'mnist2' is not a registered dataset (cifar10, cifar100, digits, imagenet, "
                            "mnist, svhn); a dataset of your own needs kind: npz or imagefolder")
    assert dataset_source("imagenet", {"source": {"root": "/x"}}) == {"root": "/x"}  # registered: unchanged


# ---------------------------------------------------------------------------
# The plan: checked before any job, torch-free
# ---------------------------------------------------------------------------


def user_config(entry: dict, **evaluation) -> dict:
    config = {"datasets": {"mine": {**entry, "arch": "small_cnn", "sigmas": [0.25],
                                    "evaluation": {"start": 0, "stride": 1, "count": 4, **evaluation}}},
              "methods": {"gaussian": {"mine": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 4, "lr": 0.1}}}}}
    return with_defaults(config, SCHEMA)


def test_plan_checks_a_user_dataset_before_any_job(npz_entry, tmp_path: Path) -> None:
    import jsonschema

    config = user_config(npz_entry)
    jsonschema.validate(config, SCHEMA)
    plan = Plan.from_config(config, schema=SCHEMA)
    assert plan.evaluation_images == {"mine": 4} and plan.dataset_infos["mine"].test_images == 5
    assert plan.data_source("mine") == npz_entry
    assert plan.user_files("mine") == [str(Path(npz_entry[s]).resolve()) for s in ("train", "test")]

    with pytest.raises(ConfigError) as e:
        Plan.from_config(user_config(npz_entry, count=4, stride=2), schema=SCHEMA)
    assert str(e.value) == ("datasets.mine.evaluation: count 4 but mine's 5 test images give only 3 from start 0 "
                            "with stride 2")
    with pytest.raises(ConfigError) as e:
        Plan.from_config(user_config(_without(npz_entry, "std")), schema=SCHEMA)
    assert str(e.value).startswith("datasets.mine: mean and std are required")
    released = copy.deepcopy(config)
    released["methods"]["gaussian"]["mine"]["published_logs"] = {"0.25": "log.tsv"}
    with pytest.raises(ConfigError) as e:
        Plan.from_config(released, schema=SCHEMA)
    assert str(e.value) == ("methods.gaussian.mine.published_logs: released checkpoints and published logs are read for "
                            "the registered datasets only, not for mine")
    for name in ("my/data", "-x"):  # names become folders
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**config, "datasets": {name: config["datasets"]["mine"]}}, SCHEMA)


def test_building_the_plan_of_a_user_dataset_imports_no_torch(npz_entry, folder_entry, tmp_path: Path) -> None:
    config = user_config(npz_entry)
    config["datasets"]["pets"] = {**folder_entry, "arch": "resnet20", "sigmas": [0.25],
                                  "evaluation": {"start": 0, "stride": 1, "count": 3}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = ("import json, sys; from rslib.experiment.plan import Plan; "
            f"plan = Plan.from_config(json.load(open({str(path)!r}))); "
            "assert plan.evaluation_images == {'mine': 4, 'pets': 3}, plan.evaluation_images; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'PIL')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cost_measurement_and_training_read_a_user_dataset_from_its_entry(npz_entry, tmp_path: Path) -> None:
    """The jobs that build a model from the dataset's facts get them from the configuration entry."""
    from rslib.costs.measure import measure_costs
    from rslib.models.checkpoint import load_model
    from rslib.training.driver import run_training

    job = {"dataset": "mine", "arch": "small_cnn", "method": "gaussian", "sigma": 0.25,
           "hparams": {"epochs": 1, "batch_size": 4, "lr": 0.1}}
    records = measure_costs([job], "cpu", steps=1, warmup=0, certify_batch=100, datasets={"mine": npz_entry})
    assert [(r["kind"], r["dataset"]) for r in records] == [("train", "mine"), ("certify", "mine")]
    meta = prepare_dataset("mine", tmp_path / "data", source=npz_entry)
    out = tmp_path / "model.pt"
    run_training(data_meta=str(meta), out_model=str(out), checkpoint_dir=str(tmp_path / "state"), dataset="mine",
                 arch="small_cnn", method="gaussian", sigma=0.25, seed=0, hparams=job["hparams"], device="cpu",
                 dataset_settings=npz_entry)
    _, spec, _ = load_model(out, dataset="mine", sigma=0.25, method="gaussian")
    assert (spec.num_classes, spec.in_channels, spec.mean, spec.std) == (3, 1, (0.5,), (0.25,))
