"""The real Snakemake workflow: DAG of the paper's configuration, lint, config validation, and a
complete tiny run on digits whose table is checked against the certificates it came from."""

from __future__ import annotations

import ast
import json
import re

import pandas as pd
import pytest
import yaml

from rslib.report.metrics import average_certified_radius, certified_accuracy
from rslib.certification.tsv import read_certificates
from rslib.certification.certify import run_certification
from workflow_helpers import REPO, SNAKEMAKE, TINY_TARGET, job_counts, snakemake, write_config



def configured_models(config: dict) -> list[tuple[str, str, str, int]]:
    """(method, dataset, σ, seed) of every model, computed independently of rules/common.smk."""
    models = []
    for method, per_dataset in config["methods"].items():
        for dataset, settings in per_dataset.items():
            by_sigma_seeds = {f"{float(k):.2f}": v for k, v in settings.get("seeds_by_sigma", {}).items()}
            for sigma in settings.get("sigmas", config["datasets"][dataset]["sigmas"]):
                key = f"{float(sigma):.2f}"
                models += [(method, dataset, key, seed) for seed in by_sigma_seeds.get(key, settings["seeds"])]
    return models


def expected_jobs(config: dict) -> dict[str, int]:
    models = configured_models(config)
    shards = sum(min(config["certify"]["shards"], config["datasets"][d]["evaluation"]["count"]) for _, d, _, _ in models)
    counts = {"prepare_data": len(config["datasets"]), "train": len(models), "certify": shards,
              "merge_certificates": len(models), "summary": 1, "ensemble_summary": 1, "all": 1,
              "paper_table": 8, "paper_figure": 2, "comparison": 1, "measure_costs": 1, "cost_estimate": 1,
              "provenance_table": 1,
              "certified_accuracy_curves": sum(len(d["sigmas"]) for d in config["datasets"].values())}
    return counts | expected_ensemble_jobs(config, models)


FITTED = {"optimal-global": "optimal", "sween": "sween", "sween-adaptive": "sween"}


def expected_ensemble_jobs(config: dict, models) -> dict[str, int]:
    """Ensemble job counts from the config, independently of rules/common.smk."""
    certs, fits, adaptive, members, pseudo = set(), set(), set(), set(), set()
    for group in config.get("ensembles", {}).get("build", []):
        dataset = group["dataset"]
        for sigma in group.get("sigmas", config["datasets"][dataset]["sigmas"]):
            sigma = f"{float(sigma):.2f}"
            for name in group["members"]:
                these = set()
                for term in name.split("+"):
                    method, count = term.split(":")
                    seeds = [k for m, d, s, k in models if (m, d, s) == (method, dataset, sigma)]
                    these |= {(dataset, method, sigma, k) for k in seeds[: int(count)]}
                members |= these
                if {"optimal-paper", "optimal-predicted"} & set(group["schemes"]):
                    pseudo |= these
                certs |= {(dataset, sigma, name, scheme) for scheme in group["schemes"]}
                fits |= {(dataset, sigma, name, FITTED[s]) for s in group["schemes"] if s in FITTED}
                if group.get("adaptive"):
                    adaptive.add((dataset, sigma, name))
    def shards(models):
        stored = [m for m in models if config["datasets"][m[0]].get("ensemble_evaluation", "stored") == "stored"]
        return sum(min(config["certify"]["shards"], config["datasets"][d]["evaluation"]["count"]) for d, _, _, _ in stored)

    counts = {"certify_ensemble": len(certs), "fit_ensemble_weights": len(fits), "certify_adaptive": len(adaptive),
              "member_outputs": shards(members), "pseudo_outputs": shards(pseudo)}
    return {k: v for k, v in counts.items() if v}


TRAIN_MESSAGE = re.compile(r"train (\w+) on (\w+), sigma=([\d.]+), seed (\d+): (\{.*\})$", re.M)


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    result = snakemake(tmp_path_factory.mktemp("paper"), "-n", "all", config=REPO / "config.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_paper_config_dry_run_lists_the_grid(paper_dry_run):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    counts = job_counts(paper_dry_run)
    assert counts == expected_jobs(config)
    trained = {(m, d, s, int(k)) for m, d, s, k, _ in TRAIN_MESSAGE.findall(paper_dry_run.stdout)}
    assert trained == set(configured_models(config))
    methods = {m for m, _, _, _ in trained}
    assert methods == {"smoothadv", "macer", "advmacer", "consistency", "smoothmix"}
    # ensembles of Table 1 / Tables 5-8 / Figure 3 need these seeds
    assert {k for m, d, s, k in trained if (m, d, s) == ("advmacer", "cifar10", "0.25")} == {0, 1, 2}
    assert {k for m, d, s, k in trained if (m, d, s) == ("smoothadv", "cifar10", "1.00")} == {0, 1, 2}
    assert {k for m, d, s, k in trained if (m, d, s) == ("macer", "svhn", "0.50")} == {0, 1}
    assert len({k for m, d, s, k in trained if (m, d, s) == ("advmacer", "cifar10", "0.50")}) == 5
    assert "results/certify/imagenet/advmacer/sigma0.50/seed0/shards/9.tsv" in paper_dry_run.stdout


#: The ensembles each of the paper's tables and figures reports (000 Tables 1, 3, 5-8, Figure 3).
PAPER_ENSEMBLES = {
    "Table 1 / Tables 5-7": [("cifar10", s, e, "average") for s in ("0.25", "0.50", "1.00") for e in (
        "advmacer:3", "advmacer:1+smoothadv:2", "advmacer:2+macer:1", "advmacer:1+macer:2", "smoothadv:3")],
    "Table 3": [("cifar10", "0.25", "advmacer:2", s) for s in ("average", "mme", "optimal-paper")],
    "Table 8": [("svhn", s, e, "average") for s in ("0.25", "0.50") for e in (
        "smoothadv:3", "advmacer:3", "advmacer:1+macer:2", "advmacer:2+macer:1", "advmacer:1+smoothadv:2",
        "advmacer:2+smoothadv:1")],
    "Figure 3": [("cifar10", "0.50", e, "average") for e in (
        "advmacer:2", "advmacer:3", "advmacer:4", "advmacer:5",
        "advmacer:1+smoothadv:1", "advmacer:1+smoothadv:2", "advmacer:1+smoothadv:3", "advmacer:1+smoothadv:4")],
}


def test_paper_dry_run_lists_every_ensemble_of_the_paper(paper_dry_run):
    for artefact, ensembles in PAPER_ENSEMBLES.items():
        for dataset, sigma, name, scheme in ensembles:
            path = f"results/ensembles/{dataset}/sigma{sigma}/{name}/{scheme}/certify.tsv"
            assert path in paper_dry_run.stdout, f"{artefact} needs {path}"
    # members are run once on stored noise, except ImageNet (direct evaluation: no stored outputs)
    assert "results/outputs/cifar10/advmacer/sigma0.50/seed4/shards/9.npz" in paper_dry_run.stdout
    assert "results/outputs/imagenet/" not in paper_dry_run.stdout


def test_paper_hyper_parameters_reach_each_train_job(paper_dry_run):
    jobs = {(m, d, s, int(k)): ast.literal_eval(h) for m, d, s, k, h in TRAIN_MESSAGE.findall(paper_dry_run.stdout)}
    # 000 Table 2: (T, m, ε) per σ, shared by SmoothAdv and AdvMacer; λ=12, γ=8, β=16 for AdvMacer
    for method in ("smoothadv", "advmacer"):
        for sigma, (steps, m, eps) in {"0.25": (2, 8, 1.0), "0.50": (2, 8, 2.0), "1.00": (2, 4, 2.0)}.items():
            h = jobs[(method, "cifar10", sigma, 0)]
            assert (h["attack_steps"], h["num_noise_vec"], h["epsilon"], h["epochs"]) == (steps, m, eps, 150)
            # batch 256 split into m mini-batches (Salman et al.'s code): 256/m images per SGD step
            assert (h["lr"], h["batch_size"] * m, h["lr_milestones"], h["warmup_epochs"]) == (0.1, 256, [50, 100], 10)
    assert {k: jobs[("advmacer", "cifar10", "1.00", 0)][k] for k in ("lbd", "gamma", "beta")} == \
        {"lbd": 12.0, "gamma": 8.0, "beta": 16.0}
    # 001 Sec. 4 / SPEC: MACER λ per σ, λ = 0 until the first decay at σ = 1.0, 440 epochs, lr 0.01, batch 64
    macer = {s: jobs[("macer", "cifar10", s, 0)] for s in ("0.25", "0.50", "1.00")}
    assert [macer[s]["lbd"] for s in macer] == [12.0, 4.0, 12.0]
    assert macer["1.00"]["lbd_zero_until_first_decay"] and "lbd_zero_until_first_decay" not in macer["0.25"]
    assert (macer["0.25"]["epochs"], macer["0.25"]["lr"], macer["0.25"]["batch_size"], macer["0.25"]["num_noise_vec"],
            macer["0.25"]["lr_milestones"], macer["0.25"]["weight_decay"]) == (440, 0.01, 64, 16, [199, 399], 5e-4)
    # 000 App. D (SVHN) and Sec. 4 (ImageNet)
    assert jobs[("smoothadv", "svhn", "0.50", 0)]["epsilon"] == 0.25
    assert (jobs[("advmacer", "svhn", "0.50", 0)]["epsilon"], jobs[("advmacer", "svhn", "0.50", 0)]["lbd"]) == (0.5, 4.0)
    assert jobs[("advmacer", "svhn", "0.25", 0)]["lr"] == 0.01
    imagenet = jobs[("advmacer", "imagenet", "0.50", 0)]
    assert (imagenet["attack_steps"], imagenet["num_noise_vec"], imagenet["epsilon"], imagenet["lbd"],
            imagenet["epochs"]) == (1, 1, 0.5, 2.0, 90)
    assert [jobs[("macer", "imagenet", s, 0)]["lbd"] for s in ("0.25", "0.50", "1.00")] == [6.0, 3.0, 3.0]
    # Consistency λ = 10 at every σ (the paper's σ = 0.25 numbers are the authors' λ = 10 log), η = 0.5;
    # SmoothMix m = 2, T = 4, η = 5, α = 0.5/1/2
    assert [jobs[("consistency", "cifar10", s, 0)]["lbd"] for s in ("0.25", "0.50", "1.00")] == [10.0, 10.0, 10.0]
    # MACER on SVHN augments as MACER's main.py does: random crops and horizontal flips
    assert jobs[("macer", "svhn", "0.25", 0)]["augment"] == {"crop_padding": 4, "flip": True}
    assert [jobs[("smoothmix", "cifar10", s, 0)]["alpha"] for s in ("0.25", "0.50", "1.00")] == [0.5, 1.0, 2.0]


def test_paper_evaluates_on_the_papers_images():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    evaluation = {d: v["evaluation"] for d, v in config["datasets"].items()}
    # 000 Tables 5-7: "the first 500 test images of Cifar-10"; ImageNet: every 100th (sorted by class)
    assert evaluation["cifar10"] == evaluation["svhn"] == {"start": 0, "stride": 1, "count": 500}
    assert evaluation["imagenet"] == {"start": 0, "stride": 100, "count": 500}


def test_published_preset_trains_only_what_the_paper_trained(tmp_path):
    """presets/cifar10-published.yaml: SmoothAdv from released checkpoints, Consistency and SmoothMix
    (σ = 0.25, 0.50) from published logs; the released files are stand-ins for the dry run."""
    preset = yaml.safe_load((REPO / "presets/cifar10-published.yaml").read_text())
    released = 0
    for per_dataset in preset["methods"].values():
        for settings in per_dataset.values():
            files = [f for r in settings.get("released", {}).values() for f in r["files"]]
            released += len(files)
            for f in files + list(settings.get("published_logs", {}).values()):
                (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / f).write_text("stand-in")
    result = snakemake(tmp_path, "-n", "all", config=REPO / "presets/cifar10-published.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = {(m, s) for m, d, s, k, _ in TRAIN_MESSAGE.findall(result.stdout)}
    assert {m for m, _ in trained} == {"advmacer", "macer", "smoothmix"}
    assert {s for m, s in trained if m == "smoothmix"} == {"1.00"}
    counts = job_counts(result)
    assert counts["import_model"] == released == 10
    assert counts["import_certification_log"] == 8  # SmoothAdv × 3 σ, Consistency × 3 σ, SmoothMix × 2 σ
    assert counts["train"] == 11 + 6 + 1  # AdvMacer 3+5+3 seeds, MACER 2 × 3 σ, SmoothMix σ = 1.00


def test_published_preset_without_its_files_lists_every_missing_one_before_any_job(tmp_path):
    """All 18 released files (10 checkpoints, 8 logs) in one error, each under where to get it."""
    result = snakemake(tmp_path, "-n", "all", config=REPO / "presets/cifar10-published.yaml")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "18 configured released files are missing" in text
    preset = yaml.safe_load((REPO / "presets/cifar10-published.yaml").read_text())
    files = [f for d in preset["methods"].values() for settings in d.values()
             for f in [*[f for r in settings.get("released", {}).values() for f in r["files"]],
                       *settings.get("published_logs", {}).values()]]
    assert len(files) == 18 and all(f"\n        {f}\n" in text for f in files)
    assert "from Hadisalman/smoothing-adversarial, models.tar.gz: the Google Drive link of its README" in text
    assert "from jh-jeong/smoothing-consistency, the repository's data/certify/ folder" in text
    assert "Job stats" not in text  # it stopped while building the DAG


def test_cost_estimate_of_the_published_preset_needs_none_of_its_files(tmp_path):
    """The preset's header promises the estimate before the files are fetched."""
    result = snakemake(tmp_path, "-n", "results/cifar10-published/cost_estimate.md",
                       config=REPO / "presets/cifar10-published.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result)["measure_costs"] == 1


def test_demo_target_dry_run(tmp_path):
    result = snakemake(tmp_path, "-n", "results/demo/certified_accuracy.tex", config=REPO / "demo/config.yaml")
    assert result.returncode == 0, result.stderr
    assert job_counts(result)["train"] == 22  # six methods × two σ, three AdvMacer/SmoothAdv and two MACER seeds


@pytest.mark.parametrize("configfile", ["config.yaml", "demo/config.yaml"])
def test_lint_is_clean(tmp_path, configfile):
    result = snakemake(tmp_path, "--lint", config=REPO / configfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"datasets": {"digits": {"arch": "small_cnn", "sigmas": [-0.25]}}}, "-0.25"),
        ({"datasets": {"fashion": {"arch": "small_cnn", "sigmas": [0.25]}}},
         "datasets.fashion: 'fashion' is not a registered dataset (cifar10, cifar100, digits, imagenet, mnist, svhn); "
         "a dataset of your own needs kind: npz or imagefolder"),
        ({"certify": {"n0": 100, "n": 300, "alpha": 1.5}}, "1.5"),
        ({"methods": {"gaussian": {"cifar10": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1}}}}},
         "dataset 'cifar10' is not configured"),
        ({"resources": {"train": {"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime": "10 minutes"}}}, "10 minutes"),
        ({"ensembles": {"build": [{"dataset": "digits", "members": ["gaussian:2"], "schemes": ["average"]}]}},
         "needs 2 gaussian models but only seeds [0] are trained"),
        ({"ensembles": {"build": [{"dataset": "digits", "members": ["gaussian:1"], "schemes": ["sween"]}]}},
         "set datasets.digits.heldout_images"),
        ({"ensembles": {"build": [{"dataset": "digits", "members": ["gaussian×2"], "schemes": ["average"]}]}},
         "gaussian×2"),
        ({"datasets": {"digits": {"arch": "small_cnn", "sigmas": [0.25], "evaluation": {"stride": 5, "count": 101}}}},
         "datasets.digits.evaluation: count 101 but digits's 500 test images give only 100 from start 0 with stride 5"),
        ({"datasets": {"digits": {"arch": "small_cnn", "sigmas": [0.25], "eval_every": 20}}}, "eval_every"),
        ({"methods": {"gaussian": {"digits": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1,
                                                                     "lr_milstones": [1]}}}}},
         "methods.gaussian.digits.hparams: gaussian does not read hyper-parameter 'lr_milstones'; "
         "did you mean 'lr_milestones'?"),
        ({"methods": {"macer": {"digits": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1},
                                           "by_sigma": {"0.25": {"momentun": 0.5}}}}}},
         "methods.macer.digits.by_sigma.0.25: macer does not read hyper-parameter 'momentun'; did you mean 'momentum'?"),
        ({"methods": {"gaussian": {"digits": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1},
                                              "by_sigma": {"0.25": {"epochs": "two"}}}}}},
         "methods.gaussian.digits.by_sigma.0.25: epochs: 'two' is not of type 'integer'"),
        ({"methods": {"smoothadv": {"digits": {"seeds": [0], "hparams": {"epochs": 1, "batch_size": 8, "lr": 0.1,
                                                                      "epsilon": -1.0}}}}},
         "-1.0 is less than the minimum of 0"),  # top-level hparams: the schema itself
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
    assert counts == {"prepare_data": 1, "train": 1, "certify": 3, "merge_certificates": 1, "summary": 1}
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


def test_rerun_is_a_no_op_and_a_lost_shard_reruns_alone(tiny_run, tmp_path):
    import shutil

    workdir = tmp_path / "run"  # a copy (mtimes and .snakemake metadata included): the shared run stays whole
    shutil.copytree(tiny_run[0], workdir, symlinks=True)
    config = tiny_run[1]
    again = snakemake(workdir, "-n", TINY_TARGET, config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    model_dir = workdir / "results/certify/digits/gaussian/sigma0.25/seed0"
    (model_dir / "shards/1.tsv").unlink()
    (model_dir / "certify.tsv").unlink()
    redo = snakemake(workdir, "-n", str(model_dir.relative_to(workdir) / "certify.tsv"), config=config)
    assert job_counts(redo) == {"certify": 1, "merge_certificates": 1}
    assert "shards/1.tsv" in redo.stdout + redo.stderr


def test_model_certified_at_another_sigma_is_refused(tiny_run, tmp_path):
    from rslib.runtime.errors import CheckpointError

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
    from rslib.certification.bounds import max_certifiable_radius

    assert ((curve["acr"] >= 0) & (curve["acr"] <= curve["accuracy"] * max_certifiable_radius(200, 0.001, 0.25))).all()


@pytest.mark.parametrize("artefact", [f"table{k}" for k in range(1, 9)] + ["figure1", "figure3"])
def test_each_paper_artefact_dry_run_lists_only_what_it_needs(tmp_path, artefact):
    """`snakemake results/tableK.tex` on the paper's configuration builds exactly that table's
    inputs: no other dataset's jobs, and nothing of the other artefacts."""
    suffix = "pdf" if artefact.startswith("figure") else "tex"
    result = snakemake(tmp_path, "-n", f"results/{artefact}.{suffix}", config=REPO / "config.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result)
    datasets = set(re.findall(r"results/models/(\w+)/", result.stdout))
    expected = {"table4": {"imagenet"}, "table8": {"svhn"}}.get(artefact, {"cifar10"})
    assert datasets == expected
    rule = "paper_figure" if artefact.startswith("figure") else "paper_table"
    assert counts[rule] == 1 and "comparison" not in counts and "summary" not in counts
    if artefact in ("table1", "table2", "table5", "table6", "table7", "table4", "table8"):
        assert "fit_ensemble_weights" not in counts and "certify_adaptive" not in counts
    if artefact == "table1":  # every configured seed of its 5 methods (the rows' seed spread) at 3 σ:
        # SmoothAdv 3+4+3, AdvMacer 3+5+3, MACER 2+2+2, SmoothMix 1+1+1, Consistency 1+1+1
        assert counts["train"] == 33 and counts["certify_ensemble"] == 12
    if artefact == "figure1":  # training curves only: AdvMacer and MACER at σ = 1.00
        assert counts["train"] == 2 and "certify" not in counts


def test_slurm_profile_without_slurm_stops_before_submitting_anything(tmp_path):
    """`--profile slurm` on a host without SLURM's commands: one line, no job, no retries."""
    import os
    import shutil
    import subprocess

    slurm = {"sbatch", "squeue", "sacct", "sinfo", "scontrol", "scancel", "srun"}
    path = tmp_path / "bin"  # this machine's PATH without SLURM's commands
    path.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for entry in os.scandir(folder) if os.path.isdir(folder) else []:
            if entry.name not in slurm and not (path / entry.name).exists():
                (path / entry.name).symlink_to(entry.path)
    assert shutil.which("sbatch", path=str(path)) is None
    env = {**os.environ, "PATH": str(path)}
    config = write_config(tmp_path)
    shutil.copytree(REPO / "slurm", tmp_path / "slurm")  # --profile slurm, from the run's directory
    result = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", str(config), "--profile",
                             "slurm", TINY_TARGET], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: --profile slurm needs SLURM's sbatch and squeue on the PATH, and this host has "
                      "neither: run from a SLURM submit host (or load its module), or run locally with --cores N "
                      "instead of --profile slurm"]
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was submitted
