"""The real Snakemake workflow: DAG of the paper's configuration, lint, config validation, and a
complete tiny run on digits whose table is checked against the certificates it came from."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from rslib.analysis import average_certified_radius, certified_accuracy, read_certificates
from rslib.certify import run_certification
from workflow_helpers import REPO, job_counts, snakemake, write_config

pytestmark = pytest.mark.workflow


def expected_jobs(config: dict) -> dict[str, int]:
    models = 0
    shards = 0
    for per_dataset in config["methods"].values():
        for dataset, settings in per_dataset.items():
            n_sigmas = len(settings.get("sigmas", config["datasets"][dataset]["sigmas"]))
            n = n_sigmas * len(settings["seeds"])
            models += n
            shards += n * min(config["certify"]["shards"], config["datasets"][dataset]["eval_max_images"])
    return {"prepare_data": len(config["datasets"]), "train": models, "certify": shards,
            "merge_certificates": models, "summary": 1, "all": 1}


def test_paper_config_dry_run_lists_the_grid(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    result = snakemake(tmp_path, "-n", "all", config=REPO / "config.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result)
    assert counts == expected_jobs(config)
    assert counts["train"] == 8  # Gaussian: CIFAR-10 ×3 σ, SVHN ×2 σ, ImageNet ×3 σ
    assert "results/models/cifar10/gaussian/sigma1.00/seed0/model.pt" in result.stdout
    assert "results/certify/imagenet/gaussian/sigma0.50/seed0/shards/9.tsv" in result.stdout


def test_demo_target_dry_run(tmp_path):
    result = snakemake(tmp_path, "-n", "results/demo/certified_accuracy.tex", config=REPO / "demo/config.yaml")
    assert result.returncode == 0, result.stderr
    assert job_counts(result)["train"] == 4


@pytest.mark.parametrize("configfile", ["config.yaml", "demo/config.yaml"])
def test_lint_is_clean(tmp_path, configfile):
    result = snakemake(tmp_path, "--lint", config=REPO / configfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"datasets": {"digits": {"arch": "small_cnn", "sigmas": [-0.25]}}}, "-0.25"),
        ({"datasets": {"mnist": {"arch": "small_cnn", "sigmas": [0.25]}}}, "mnist"),
        ({"certify": {"n0": 100, "n": 300, "alpha": 1.5}}, "1.5"),
        ({"methods": {"gaussian": {"cifar10": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1}}}}},
         "dataset 'cifar10' is not configured"),
        ({"resources": {"train": {"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime": "10 minutes"}}}, "10 minutes"),
    ],
)
def test_invalid_config_is_refused_with_a_clear_error(tmp_path, change, message):
    result = snakemake(tmp_path, "-n", config=write_config(tmp_path, **change))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_unknown_method_target_is_refused(tmp_path):
    result = snakemake(tmp_path, "-n", "results/models/digits/nosuchmethod/sigma0.25/seed0/model.pt",
                       config=write_config(tmp_path))
    assert result.returncode != 0
    assert "No rule to produce results/models/digits/nosuchmethod" in result.stdout + result.stderr


def test_tiny_run_produces_table_and_figure_from_its_certificates(tiny_run):
    workdir, _, result = tiny_run
    counts = job_counts(result)
    assert counts == {"prepare_data": 1, "train": 1, "certify": 3, "merge_certificates": 1, "summary": 1, "all": 1}
    tsv = workdir / "results/certify/digits/gaussian/sigma0.25/seed0/certify.tsv"
    certs = read_certificates(tsv)
    assert list(certs["idx"]) == list(range(0, 500, 25))
    summary = pd.read_csv(workdir / "results/certified_accuracy.csv")
    row = summary.iloc[0]
    assert row["acr"] == pytest.approx(average_certified_radius(certs), abs=0, rel=1e-12)
    assert row["r=0.25"] == pytest.approx(certified_accuracy(certs, 0.25), abs=0)
    table = (workdir / "results/certified_accuracy.tex").read_text()
    assert f"{row['acr']:.3f}" in table and r"\toprule" in table
    assert (workdir / "results/certified_accuracy.pdf").read_bytes().startswith(b"%PDF")


def test_tiny_run_provenance(tiny_run):
    workdir, _, _ = tiny_run
    record = json.loads((workdir / "results/certify/digits/gaussian/sigma0.25/seed0/certify.json").read_text())
    assert len(record["shards"]) == 3
    assert record["certify"]["n"] == 300 and record["certify_config_hash"]
    model = record["model"]["provenance"]
    assert model["rslib_version"] and "torch" in model["packages"] and model["device"].startswith("cpu")
    assert record["model"]["train_seconds"] > 0


def test_merged_shards_equal_one_unsharded_certification(tiny_run, tmp_path):
    workdir, config, _ = tiny_run
    merged = read_certificates(workdir / "results/certify/digits/gaussian/sigma0.25/seed0/certify.tsv")
    run_certification(
        model_path=workdir / "results/models/digits/gaussian/sigma0.25/seed0/model.pt",
        data_meta=workdir / "data/digits/meta.json", dataset="digits", sigma=0.25,
        indices=list(range(0, 500, 25)), out_tsv=tmp_path / "whole.tsv", n0=100, n=300, alpha=0.001,
        batch_size=100, noise_seed=0, device="cpu",
    )
    whole = read_certificates(tmp_path / "whole.tsv")
    columns = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(merged[columns], whole[columns])


def test_rerun_is_a_no_op_and_a_lost_shard_reruns_alone(tiny_run):
    workdir, config, _ = tiny_run
    again = snakemake(workdir, "-n", "all", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    model_dir = workdir / "results/certify/digits/gaussian/sigma0.25/seed0"
    (model_dir / "shards/1.tsv").unlink()
    (model_dir / "certify.tsv").unlink()
    redo = snakemake(workdir, "-n", str(model_dir.relative_to(workdir) / "certify.tsv"), config=config)
    assert job_counts(redo) == {"certify": 1, "merge_certificates": 1}
    assert "shards/1.tsv" in redo.stdout + redo.stderr


def test_model_certified_at_another_sigma_is_refused(tiny_run, tmp_path):
    from rslib.errors import CheckpointError

    workdir, _, _ = tiny_run
    with pytest.raises(CheckpointError, match="sigma=0.25 but is used at sigma=0.5"):
        run_certification(
            model_path=workdir / "results/models/digits/gaussian/sigma0.25/seed0/model.pt",
            data_meta=workdir / "data/digits/meta.json", dataset="digits", sigma=0.5, indices=[0],
            out_tsv=tmp_path / "x.tsv", n0=100, n=100, alpha=0.001, batch_size=100, noise_seed=0, device="cpu",
        )
    assert not (tmp_path / "x.tsv").exists()


def test_tiny_run_records_a_training_curve(tiny_run):
    workdir, _, _ = tiny_run
    curve = pd.read_csv(workdir / "results/models/digits/gaussian/sigma0.25/seed0/training_curve.csv")
    assert list(curve["epoch"]) == [1, 2]  # every epoch (every: 1) of 2
    assert curve["train_seconds"].is_monotonic_increasing and (curve["train_seconds"] > 0).all()
    assert (curve["images"] == 5).all()
    assert ((curve["accuracy"] >= 0) & (curve["accuracy"] <= 1)).all()
    from rslib.smoothing import max_certifiable_radius

    assert ((curve["acr"] >= 0) & (curve["acr"] <= curve["accuracy"] * max_certifiable_radius(200, 0.001, 0.25))).all()
