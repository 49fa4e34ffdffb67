"""The ensemble stages of the real workflow (tests/configs/ensemble.yaml: two tiny members, every
scheme, CertifyAdp): members run once, every scheme certified from their stored outputs, tables
built from the TSVs, and a new ensemble or scheme reruns no network."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rslib.analysis import average_certified_radius, read_certificates
from rslib.schemes import SCHEMES
from workflow_helpers import REPO, job_counts, snakemake, write_config

pytestmark = pytest.mark.workflow

BASE = "tests/configs/ensemble.yaml"
ENSEMBLE_DIR = "results/ensembles/digits/sigma0.25/gaussian:2"


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ensemble")
    result = snakemake(workdir, "--cores", "2", "all", config=REPO / BASE)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result


def test_members_run_once_and_every_scheme_is_certified(ensemble_run):
    workdir, result = ensemble_run
    counts = job_counts(result)
    # 2 members × 2 shards of stored outputs serve all 10 schemes; SWEEN and optimal-global fit once each
    assert counts["member_outputs"] == 4
    assert counts["certify_ensemble"] == len(SCHEMES) == 10
    assert counts["fit_ensemble_weights"] == 2
    summary = pd.read_csv(workdir / "results/ensembles.csv")
    assert sorted(summary["scheme"]) == sorted(SCHEMES)
    for row in summary.to_dict("records"):
        tsv = workdir / ENSEMBLE_DIR / row["scheme"] / "certify.tsv"
        df = read_certificates(tsv)
        assert len(df) == 10 and row["images"] == 10
        assert row["acr"] == pytest.approx(average_certified_radius(df))  # table computed from its TSV
        provenance = json.loads((tsv.parent / "certify.json").read_text())
        assert provenance["mode"] == "stored outputs" and provenance["sound"] == SCHEMES[row["scheme"]].sound
        assert len(provenance["weights_per_image"]) == 10
    sween = json.loads((workdir / ENSEMBLE_DIR / "weights-sween.json").read_text())
    assert sween["heldout_images"] == 100 and sum(sween["weights"]) == pytest.approx(1.0)
    assert "EsbRS-Gaussian$\\times$2" in (workdir / "results/ensembles.tex").read_text()


def test_certify_adaptive_reports_stages_and_sample_reduction(ensemble_run):
    workdir, _ = ensemble_run
    result = json.loads((workdir / ENSEMBLE_DIR / "adaptive.json").read_text())
    (radius,) = result["radii"]
    assert radius["radius"] == 0.1 and sum(radius["stage_return_fractions"]) == pytest.approx(1.0)
    # plain CERTIFY draws n0 + n = 400 samples; CertifyAdp 100 + 100 (stage 1) or + 300 (stage 2)
    assert radius["sample_reduction"] == pytest.approx(400 / radius["mean_samples"])
    assert 200 <= radius["mean_samples"] <= 500
    rows = pd.read_csv(workdir / ENSEMBLE_DIR / "adaptive.tsv", sep="\t")
    assert len(rows) == 10 and set(rows["stage"]) <= {1, 2}
    assert pd.read_csv(workdir / "results/adaptive.csv")["sample_reduction"].iloc[0] == radius["sample_reduction"]


def test_new_ensembles_and_schemes_rerun_no_network(ensemble_run, tmp_path):
    """SPEC "Performance": a new scheme or a smaller ensemble is a reduction over stored outputs."""
    workdir, _ = ensemble_run
    config = write_config(tmp_path, base=BASE, ensembles={
        "build": [{"dataset": "digits", "members": ["gaussian:2", "gaussian:1"], "schemes": ["average", "vote"]}],
        "optimal": {"m": 2, "n": 5}, "sween": {"noise_draws": 2, "steps": 20},
        "adaptive": {"radii": [0.1], "stages": [100, 300], "beta": 0.01},
    })
    result = snakemake(workdir, "-n", "all", config=config)
    assert result.returncode == 0, result.stderr
    assert job_counts(result) == {"certify_ensemble": 2, "ensemble_summary": 1, "all": 1}


def test_members_are_certified_from_their_stored_counts_exactly(ensemble_run, tmp_path):
    """A member's single-model certificate comes from the counts stored with its outputs and
    equals a direct certification of the model on the same noise."""
    from rslib.certify import run_certification

    workdir, _ = ensemble_run
    model_dir = "digits/gaussian/sigma0.25/seed1"
    provenance = json.loads((workdir / f"results/certify/{model_dir}/shards/0.json").read_text())
    assert provenance["counts_from"].endswith(f"outputs/{model_dir}/shards/0.npz")
    direct = tmp_path / "direct.tsv"
    run_certification(model_path=workdir / f"results/models/{model_dir}/model.pt",
                      data_meta=workdir / "data/digits/meta.json", dataset="digits", sigma=0.25,
                      indices=list(range(0, 500, 50)), out_tsv=direct, n0=100, n=300, alpha=0.001,
                      batch_size=300, noise_seed=0, device="cpu")
    stored = read_certificates(workdir / f"results/certify/{model_dir}/certify.tsv")
    reference = read_certificates(direct)
    columns = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(stored[columns], reference[columns])
