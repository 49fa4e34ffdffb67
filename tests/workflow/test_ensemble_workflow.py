"""The ensemble stages and the paper's artefacts in the real workflow (tests/configs/paper_tiny.yaml:
three tiny AdvMacer/SmoothAdv/MACER models, every ensemble scheme, CertifyAdp, Tables 1-8, Figures
1 and 3): members run once, every scheme certified from their stored outputs, every artefact built
from the TSVs, and neither a new scheme nor a cosmetic table change reruns a network."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rslib.report.metrics import average_certified_radius
from rslib.certification.tsv import read_certificates
from rslib.ensembles.schemes import SCHEMES
from latex_helpers import check_tex_artefact, require_pdflatex
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake, write_config


BASE = "tests/configs/paper_tiny.yaml"
ENSEMBLE_DIR = "results/ensembles/digits/sigma0.25/advmacer:2"
ARTEFACTS = [f"results/table{k}.tex" for k in range(1, 9)] + ["results/figure1.pdf", "results/figure3.pdf",
             "results/curves/digits_sigma0.25.pdf", "results/comparison.md", "results/comparison.tex",
             "results/cost_estimate.md", "results/provenance.csv", "results/ensembles.tex", "results/adaptive.csv"]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """`snakemake all` on a copy of the workflow (so a test can edit a script of it)."""
    repo = copy_workflow(tmp_path_factory.mktemp("repo"))
    workdir = tmp_path_factory.mktemp("paper")
    result = snakemake(workdir, "--cores", "2", "all", config=REPO / BASE, repo=repo)
    assert result.returncode == 0, result.stderr[-4000:]
    return repo, workdir, result


def test_members_run_once_and_every_scheme_is_certified(paper_run):
    _, workdir, result = paper_run
    counts = job_counts(result)
    # 4 models × 2 shards of stored outputs serve all 12 ensemble certificates and the models' own
    # certificates; SWEEN and optimal-global weights are fitted once each
    assert counts["member_outputs"] == 8 and counts["certify"] == 8
    assert counts["pseudo_outputs"] == 4  # only the per-point-weighted AdvMacer×2 members
    assert counts["certify_ensemble"] == len(SCHEMES) + 2 and counts["fit_ensemble_weights"] == 2
    summary = pd.read_csv(workdir / "results/ensembles.csv")
    assert sorted(summary.query("ensemble == 'advmacer:2'")["scheme"]) == sorted(SCHEMES)
    for row in summary.to_dict("records"):
        tsv = workdir / f"results/ensembles/digits/sigma0.25/{row['ensemble']}/{row['scheme']}/certify.tsv"
        df = read_certificates(tsv)
        assert len(df) == 10 and row["images"] == 10
        assert row["acr"] == pytest.approx(average_certified_radius(df))  # table computed from its TSV
        provenance = json.loads((tsv.parent / "certify.json").read_text())
        assert provenance["mode"] == "stored float32 outputs" and provenance["sound"] == SCHEMES[row["scheme"]].sound
        assert row["evaluation"] == "stored float32 outputs"  # the summary names the storage
        assert len(provenance["weights_per_image"]) == 10
    sween = json.loads((workdir / ENSEMBLE_DIR / "weights-sween.json").read_text())
    assert sween["heldout_images"] == 100 and sum(sween["weights"]) == pytest.approx(1.0)


def test_certify_adaptive_reports_stages_and_sample_reduction(paper_run):
    _, workdir, _ = paper_run
    result = json.loads((workdir / ENSEMBLE_DIR / "adaptive.json").read_text())
    (radius,) = result["radii"]
    assert radius["radius"] == 0.1 and sum(radius["stage_return_fractions"]) == pytest.approx(1.0)
    # plain CERTIFY draws n0 + n = 400 samples; CertifyAdp 100 + 100 (stage 1) or + 300 (stage 2)
    assert radius["sample_reduction"] == pytest.approx(400 / radius["mean_samples"])
    assert 200 <= radius["mean_samples"] <= 500
    rows = pd.read_csv(workdir / ENSEMBLE_DIR / "adaptive.tsv", sep="\t")
    assert len(rows) == 10 and set(rows["stage"]) <= {1, 2}
    assert pd.read_csv(workdir / "results/adaptive.csv")["sample_reduction"].iloc[0] == radius["sample_reduction"]


def test_members_are_certified_from_their_stored_counts_exactly(paper_run, tmp_path):
    """A member's single-model certificate comes from the counts stored with its outputs and
    equals a direct certification of the model on the same noise."""
    from rslib.certification.certify import run_certification

    _, workdir, _ = paper_run
    model_dir = "digits/advmacer/sigma0.25/seed1"
    provenance = json.loads((workdir / f"results/certify/{model_dir}/shards/0.json").read_text())
    assert provenance["counts_from"].endswith(f"outputs/{model_dir}/shards/0.npz")
    direct = tmp_path / "direct.tsv"
    run_certification(model_path=workdir / f"results/models/{model_dir}/model.pt",
                      data_meta=workdir / "data/digits/meta.json", dataset="digits", sigma=0.25,
                      indices=list(range(10)), out_tsv=direct, n0=100, n=300, alpha=0.001,
                      batch_size=300, noise_seed=0, device="cpu")
    stored = read_certificates(workdir / f"results/certify/{model_dir}/certify.tsv")
    columns = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(stored[columns], read_certificates(direct)[columns])


def test_every_paper_artefact_is_built_from_the_certificates(paper_run):
    _, workdir, _ = paper_run
    for path in ARTEFACTS:
        assert (workdir / path).stat().st_size > 0, path
    table1 = pd.read_csv(workdir / "results/table1.csv")
    advmacer = read_certificates(workdir / "results/certify/digits/advmacer/sigma0.25/seed0/certify.tsv")
    cell = table1.query("row == 'AdvMacer' and metric == 'acr'")["value"].item()
    assert cell == pytest.approx(average_certified_radius(advmacer))
    tex = (workdir / "results/table1.tex").read_text()
    assert f"{cell:.3f}" in tex and "\\textbf" in tex and "Dataset: digits (the paper: CIFAR-10)" in tex
    table3 = pd.read_csv(workdir / "results/table3.csv")
    assert set(table3["row"]) == {"AdvMacer", "average", "mme", "optimal-paper", "optimal-predicted", "optimal-global"}
    assert "nothing to report" in (workdir / "results/table4.tex").read_text()  # imagenet: null
    assert "is not configured" in (workdir / "results/table6.tex").read_text()  # σ = 0.50 not trained
    figure3 = pd.read_csv(workdir / "results/figure3.csv")
    assert sorted(figure3["components"]) == [1, 1, 2, 2]
    comparison = pd.read_csv(workdir / "results/comparison.csv")
    assert len(comparison) > 0 and set(comparison["table"]) <= {f"table{k}" for k in range(1, 9)}
    ours = pd.concat([t for k in range(1, 9) if len(t := pd.read_csv(workdir / f"results/table{k}.csv"))])
    merged = comparison.merge(ours, on=["table", "row", "metric"])
    assert (merged["ours"] == merged["value"]).any()
    # Did it reproduce? digits stands in for CIFAR-10 and SVHN: nothing is comparable, and the
    # comparison says so at the top and names the reason in every cell
    assert set(comparison["verdict"]) == {"not comparable"}
    assert comparison["reason"].str.match(r"dataset digits \(the paper: (CIFAR-10|SVHN)\)").all()
    times = comparison[comparison["metric"].isin(["train_hours", "certify_seconds"])]
    assert len(times) and times["reason"].str.contains(r"; hardware cpu:.* \(the paper: NVIDIA V100\)").all()
    assert (workdir / "results/comparison.md").read_text().splitlines()[2].startswith(
        "**No cell of this run is comparable with the paper**: dataset digits (the paper: CIFAR-10)")
    summary = pd.read_csv(workdir / "results/comparison_summary.csv").set_index("table")
    assert summary.loc["table1", "summary"].startswith("Table 1: none of ")
    # the AdvMacer row has two trained seeds: its interval draws both, its spread lists both
    row = table1.query("row == 'AdvMacer' and metric == 'acr'").iloc[0]
    seed1 = average_certified_radius(read_certificates(
        workdir / "results/certify/digits/advmacer/sigma0.25/seed1/certify.tsv"))
    assert row["seeds"] == 2
    assert (row["seed_min"], row["seed_max"]) == pytest.approx((min(cell, seed1), max(cell, seed1)))
    assert row["low"] <= row["high"]
    estimate = (workdir / "results/cost_estimate.md").read_text()
    assert "TOTAL" in estimate and "Costs measured on: cpu" in estimate


def test_every_tex_artefact_compiles_alone_and_input_into_a_paper(paper_run, tmp_path):
    """Issue 14: every .tex that `snakemake all` writes is pure ASCII, compiles alone with pdflatex
    (the default of paper templates) and its tabular compiles \\input into a document that loads
    only booktabs. Under CI=true a missing pdflatex fails this test instead of skipping it."""
    require_pdflatex()
    _, workdir, _ = paper_run
    written = sorted((workdir / "results").rglob("*.tex"))
    expected = {f"table{k}.tex" for k in range(1, 9)} | {"certified_accuracy.tex", "ensembles.tex", "comparison.tex"}
    assert expected <= {p.name for p in written}
    for i, path in enumerate(written):
        check_tex_artefact(path, tmp_path / str(i))


def test_new_schemes_rerun_no_network(paper_run, tmp_path):
    """SPEC "Performance": a new scheme or ensemble is a reduction over stored outputs."""
    repo, workdir, _ = paper_run
    config = write_config(tmp_path, base=BASE, ensembles={
        "build": [{"dataset": "digits", "members": ["advmacer:2", "advmacer:1"], "schemes": ["average", "vote"]}],
        "optimal": {"m": 2, "n": 5}, "sween": {"epochs": 3},
        "adaptive": {"radii": [0.1], "stages": [100, 300], "beta": 0.01},
    })
    result = snakemake(workdir, "-n", "results/ensembles.tex", config=config, repo=repo)
    assert result.returncode == 0, result.stderr
    assert job_counts(result) == {"certify_ensemble": 2, "ensemble_summary": 1}


def test_cosmetic_table_change_rebuilds_only_the_tables(paper_run):
    """showyourwork: editing a table script reruns the tables (and the comparison built from
    them), never training or certification."""
    repo, workdir, _ = paper_run
    script = repo / "workflow_scripts/paper_table.py"
    script.write_text(script.read_text() + "\n# a cosmetic change\n")
    result = snakemake(workdir, "-n", "all", config=REPO / BASE, repo=repo)
    assert result.returncode == 0, result.stderr
    assert job_counts(result) == {"paper_table": 8, "comparison": 1, "all": 1}
