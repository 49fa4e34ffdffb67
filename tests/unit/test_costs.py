"""GPU-hour estimate: measured per-step costs (rslib.costs) and the two workflow scripts."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rslib.costs.estimate import estimate_gpu_hours, summarize_estimate
from rslib.costs.measure import measure_costs

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow_scripts"
HP = {"epochs": 1, "batch_size": 16, "lr": 0.1, "num_noise_vec": 2, "gamma": 8.0, "beta": 16.0, "lbd": 2.0}


def _job(method: str, sigma: float = 0.25, **hparams) -> dict:
    return {"dataset": "digits", "arch": "small_cnn", "method": method, "sigma": sigma, "hparams": {**HP, **hparams}}


def test_measure_costs_times_real_steps():
    jobs = [_job("gaussian"), _job("macer"), _job("macer", sigma=0.5, epochs=3)]  # the last shares the macer timing
    records = measure_costs(jobs, "cpu", steps=2, warmup=1, certify_batch=200)
    train = [r for r in records if r["kind"] == "train"]
    certify = [r for r in records if r["kind"] == "certify"]
    assert [(r["method"], r["sigma"], r["batch_size"]) for r in train] == [("gaussian", 0.25, 16), ("macer", 0.25, 16)]
    assert len(certify) == 1 and certify[0]["batch_size"] == 200
    for r in train:
        assert math.isfinite(r["seconds_per_step"]) and r["seconds_per_step"] > 0
        assert r["device"] == "cpu"
        assert "epochs" not in r["hparams"] and r["hparams"]["num_noise_vec"] == 2
    assert math.isfinite(certify[0]["seconds_per_sample"]) and certify[0]["seconds_per_sample"] > 0
    print({(r["method"] if r["kind"] == "train" else "certify"): r.get("seconds_per_step", r.get("seconds_per_sample"))
           for r in records})


def test_certify_timing_reports_the_batch_memory_allowed(monkeypatch):
    """A network that runs out of memory above 200 samples: Smooth halves 1000 to 500, then 200,
    during the warm-up, and the record names 200, the batch the timed calls ran at."""
    import torch
    from tiny_models import OutOfMemoryAbove

    from rslib.costs.measure import time_certify_sample
    from rslib.models.checkpoint import ModelSpec

    build = ModelSpec.build
    monkeypatch.setattr(ModelSpec, "build", lambda spec: OutOfMemoryAbove(build(spec), limit=200))
    seconds, batch = time_certify_sample("digits", "small_cnn", torch.device("cpu"), batch_size=1000, steps=1, warmup=1)
    assert batch == 200 and math.isfinite(seconds) and seconds > 0


MEASURED = [
    {"kind": "train", "dataset": "digits", "arch": "small_cnn", "method": "gaussian", "sigma": 0.25,
     "batch_size": 64, "seconds_per_step": 0.5},
    {"kind": "train", "dataset": "digits", "arch": "small_cnn", "method": "gaussian", "sigma": 0.5,
     "batch_size": 64, "seconds_per_step": 0.75},
    {"kind": "train", "dataset": "digits", "arch": "small_cnn", "method": "macer", "sigma": 0.25,
     "batch_size": 64, "hparams": {"batch_size": 64, "num_noise_vec": 4}, "seconds_per_step": 2.0},
    {"kind": "certify", "dataset": "digits", "arch": "small_cnn", "seconds_per_sample": 1e-5},
]


def _train(method="gaussian", sigma=0.25, seed=0, heldout=200, **hparams):
    hp = {"epochs": 2, "batch_size": 64, "lr": 0.1, **hparams}
    return {"dataset": "digits", "arch": "small_cnn", "method": method, "sigma": sigma, "seed": seed,
            "hparams": hp, "heldout": heldout}


def test_estimate_arithmetic():
    train = [
        _train(),  # 2 × ceil(1097 / 64) = 2 × 18 steps × 0.5 s
        _train(sigma=0.5, heldout=0, epochs=3),  # same σ measured: 3 × ceil(1297 / 64) = 3 × 21 × 0.75 s
        _train(sigma=1.0, seed=1),  # no σ = 1.0 measurement: falls back to (dataset, arch, method)
        _train("macer", sigma=0.5, num_noise_vec=4, epochs=10, lr=0.01),  # schedule keys do not matter
    ]
    certify = [
        {"dataset": "digits", "arch": "small_cnn", "model": "gaussian-0.25", "images": 500, "samples_per_image": 1100},
        {"dataset": "digits", "arch": "small_cnn", "model": "macer-0.50", "images": 100, "n0": 100, "n": 10_000},
    ]
    df = estimate_gpu_hours(train, certify, MEASURED, {"digits": 1297})
    assert list(df["rule"]) == ["train"] * 4 + ["certify"] * 2
    assert list(df["units"]) == [2 * 18, 3 * 21, 2 * 18, 10 * 18, 500 * 1100, 100 * 10_100]
    expected = [2 * 18 * 0.5, 3 * 21 * 0.75, 2 * 18 * 0.5, 10 * 18 * 2.0, 500 * 1100 * 1e-5, 100 * 10_100 * 1e-5]
    assert df["gpu_hours"].tolist() == pytest.approx([e / 3600 for e in expected], rel=1e-12)
    assert df.loc[0, "gpu_hours"] == 2 * math.ceil((1297 - 200) / 64) * 0.5 / 3600
    assert list(df["seed"][:3]) == [0, 0, 1] and df.loc[4, "label"] == "gaussian-0.25"

    summary = summarize_estimate(df)
    assert list(summary["rule"]) == ["train", "certify", "TOTAL"]
    assert summary["gpu_hours"].tolist() == pytest.approx(
        [sum(expected[:4]) / 3600, sum(expected[4:]) / 3600, sum(expected) / 3600]
    )
    assert summary["jobs"].tolist() == [4, 2, 6]


def test_missing_measurement_is_named():
    with pytest.raises(ValueError, match=r"no measured training cost for dataset=digits arch=small_cnn method=smoothadv"):
        estimate_gpu_hours([_train("smoothadv")], [], MEASURED, {"digits": 1297})
    # same method but other cost hyper-parameters (more noise copies per image): not interchangeable
    with pytest.raises(ValueError, match=r"method=macer sigma=0.25 batch_size=64"):
        estimate_gpu_hours([_train("macer", num_noise_vec=16)], [], MEASURED, {"digits": 1297})
    # other batch size than measured
    with pytest.raises(ValueError, match=r"method=gaussian sigma=0.25 batch_size=32"):
        estimate_gpu_hours([_train(batch_size=32)], [], MEASURED, {"digits": 1297})
    with pytest.raises(ValueError, match=r"no measured certification cost for dataset=digits arch=resnet20"):
        estimate_gpu_hours([], [{"dataset": "digits", "arch": "resnet20", "model": "m", "images": 1,
                                 "samples_per_image": 1}], MEASURED, {"digits": 1297})


def _run_script(name: str, **smk) -> None:
    config = {"datasets": {"digits": {"arch": "small_cnn", "sigmas": [0.25]}}}  # what the scripts read of it
    fake = SimpleNamespace(scriptdir=str(SCRIPTS), threads=1, config=config, **smk)
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": fake}, run_name="__main__")


def test_scripts(tmp_path):
    jobs = [{**_job("gaussian"), "seed": 0, "heldout": 200}]
    measured = tmp_path / "costs.json"
    _run_script(
        "measure_costs.py",
        params=SimpleNamespace(jobs=jobs, device="cpu", steps=1, certify_batch=100),
        output=[str(measured)], log=[str(tmp_path / "measure.log")],
    )
    records = json.loads(measured.read_text())
    assert {r["kind"] for r in records} == {"train", "certify"} and {r["device"] for r in records} == {"cpu"}

    certify = [{"dataset": "digits", "arch": "small_cnn", "model": "gaussian-0.25", "images": 10, "samples_per_image": 200}]
    out = SimpleNamespace(csv=str(tmp_path / "estimate.csv"), md=str(tmp_path / "estimate.md"))
    _run_script(
        "cost_estimate.py",
        input=SimpleNamespace(measured=str(measured)),
        params=SimpleNamespace(train_jobs=jobs, certify_jobs=certify, imported_jobs=[], imported_unpriced=[]),
        output=out, log=[str(tmp_path / "estimate.log")],
    )
    df = pd.read_csv(out.csv)
    assert list(df["rule"]) == ["train", "certify"]
    assert df.loc[0, "units"] == math.ceil(1097 / 16)
    md = Path(out.md).read_text()
    assert "| TOTAL |" in md and "measured on: cpu" in md and "seconds per step × steps" in md
    assert "Released checkpoints" not in md  # nothing imported in this grid


def test_imported_section_prices_the_training_saved():
    import pandas as pd

    from rslib.costs.estimate import imported_section

    saved = pd.DataFrame({"dataset": ["cifar10"] * 2, "method": ["smoothadv"] * 2, "gpu_hours": [10.0, 12.5]})
    text = imported_section(saved, 100.0, ["cifar10/macer/σ=0.25/seed 0"])
    assert "2 imported models would take 22.50 GPU-hours to train here" in text
    assert "this run needs 100.00 GPU-hours instead of 122.50 for the full retraining grid (22.50 saved)" in text
    assert "1 imported models have no configured hparams" in text and "cifar10/macer" in text
    assert imported_section(saved.iloc[:0], 100.0, []) == ""
