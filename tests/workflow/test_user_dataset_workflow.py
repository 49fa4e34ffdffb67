"""A dataset of the user's own (``kind: npz``) through the real workflow: prepare_data, train,
certify (2 shards), merge_certificates and summary, on files named relative to the working
directory; replacing one of them prepares the dataset again and reruns what depends on it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from rslib.certification.tsv import read_certificates
from rslib.report.metrics import average_certified_radius
from workflow_helpers import TINY_TARGET, job_counts, snakemake


def test_npz_dataset_of_your_own_is_trained_certified_and_summarised(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(24) % 3, "test": np.arange(10) % 3}
    for split, y in labels.items():
        # three classes of grey 8 x 8 images, told apart by their brightness
        images = (rng.integers(0, 60, size=(len(y), 1, 8, 8)) + 90 * y[:, None, None, None]).astype(np.uint8)
        (tmp_path / "files").mkdir(exist_ok=True)
        np.savez(tmp_path / "files" / f"{split}.npz", images=images, labels=y.astype(np.int64))
    config = {
        "device": "cpu",
        "datasets": {"shades": {
            "kind": "npz", "train": "files/train.npz", "test": "files/test.npz", "classes": 3,
            "mean": [0.45], "std": [0.3], "arch": "small_cnn", "sigmas": [0.25],
            "evaluation": {"start": 1, "stride": 2, "count": 4},
        }},
        "methods": {"gaussian": {"shades": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.05}}}},
        "certify": {"n0": 100, "n": 200, "alpha": 0.001, "batch_size": 200, "shards": 2},
        "training_curves": {"every": 1, "images": 2, "n0": 100, "n": 100, "alpha": 0.001, "batch_size": 100},
        "report": {"radii": [0.0, 0.25]},
        "resources": {"train": {"gpu": 0, "threads": 1, "mem_mb": 1000, "runtime": "10m"},
                      "certify": {"gpu": 0, "threads": 1, "mem_mb": 1000, "runtime": "10m"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    result = snakemake(tmp_path, "--cores", "1", TINY_TARGET, config=path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert job_counts(result) == {"prepare_data": 1, "train": 1, "certify": 2, "merge_certificates": 1, "summary": 1}
    meta = json.loads((tmp_path / "data/shades/meta.json").read_text())
    assert (meta["num_classes"], meta["image_shape"], meta["n_train"], meta["n_test"]) == (3, [1, 8, 8], 24, 10)
    assert meta["source"]["train"]["path"] == str(tmp_path / "files/train.npz")
    certs = read_certificates(tmp_path / "results/certify/shades/gaussian/sigma0.25/seed0/certify.tsv")
    assert list(certs["idx"]) == [1, 3, 5, 7]  # the evaluation subset of the user's test split
    assert list(certs["label"]) == [int(labels["test"][i]) for i in (1, 3, 5, 7)]
    summary = pd.read_csv(tmp_path / "results/certified_accuracy.csv")
    assert list(summary["dataset"]) == ["shades"]
    assert summary["acr"].item() == pytest.approx(average_certified_radius(certs), abs=0, rel=1e-12)

    # the user replaces a file: its preparation and what depends on it rerun
    with np.load(tmp_path / "files/test.npz") as test:
        arrays = dict(test)
    arrays["images"][0] = 255 - arrays["images"][0]
    np.savez(tmp_path / "files/test.npz", **arrays)
    again = snakemake(tmp_path, "-n", TINY_TARGET, config=path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert job_counts(again) == {"prepare_data": 1, "train": 1, "certify": 2, "merge_certificates": 1, "summary": 1}

    config["datasets"]["shades"]["evaluation"]["count"] = 6  # 10 test images from 1 with stride 2: only 5
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    refused = snakemake(tmp_path, "-n", TINY_TARGET, config=path)
    assert refused.returncode != 0
    assert ("datasets.shades.evaluation: count 6 but shades's 10 test images give only 5 from start 1 with stride 2"
            in refused.stdout + refused.stderr)
