"""Published baselines in the real workflow: released checkpoints fill grid slots instead of
training jobs (SmoothAdv in SmoothAdv's layout, MACER in MACER's), a published certification log
stands for a single-model row, and tables, ensembles, the comparison and the cost estimate treat
them like trained models, each marked with its origin (000 Sec. 4: SmoothAdv's released models)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rslib.report.metrics import average_certified_radius
from rslib.certification.tsv import read_certificates
from latex_helpers import check_tex_artefact, require_pdflatex
from foreign_models import ForeignCenter, ForeignCifarResNet, cohen_file, randomise
from workflow_helpers import job_counts, snakemake


DIGITS_MEAN = (0.3053,)
TARGETS = ["results/table1.tex", "results/table2.tex", "results/table5.tex", "results/figure1.pdf",
           "results/comparison.md", "results/cost_estimate.md"]


def published_log(path, rows):
    """A Cohen-format log as the reference repositories publish it: radius with 3 significant
    digits ('{:.3}'), time as str(timedelta), plain seconds in a few files, idx of every image."""
    rng = np.random.default_rng(0)
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for i in rows:
        label = int(rng.integers(10))
        correct = int(rng.random() < 0.8)
        radius = float(rng.random()) * 0.9 if correct or rng.random() < 0.5 else 0.0
        time = ["0:00:01.250000", "0:00:02", "1.5"][i % 3]
        lines.append(f"{i}\t{label}\t{label if correct else (label + 1) % 10}\t{radius:.3}\t{correct}\t{time}")
    path.write_text("\n".join(lines) + "\n")


def released_config(workdir, log_rows=range(0, 40)):
    smoothadv = []
    for k in range(2):
        path = workdir / "released" / "pretrained_models" / "cifar10" / f"PGD_2steps/eps_{64 * (k + 1)}" / "noise_0.25" \
            / "checkpoint.pth.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        cohen_file(path, randomise(ForeignCifarResNet(20, 10, in_channels=1), 10 + k), "cifar_resnet20",
                   ForeignCenter(DIGITS_MEAN))
        smoothadv.append(str(path))
    macer = workdir / "released" / "macer" / "440.pth"
    macer.parent.mkdir(parents=True)
    torch.save({"net": randomise(ForeignCifarResNet(20, 10, in_channels=1), 20).state_dict(), "epoch": 440}, macer)
    log = workdir / "released" / "consistency_noise_0.25"
    published_log(log, log_rows)
    adv = {"epochs": 1, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1, "attack_steps": 1, "num_noise_vec": 2,
           "epsilon": 0.25}
    # The fabricated files hold random weights: the import's plausibility check (accuracy under
    # noise far above chance, rslib.certification.plausibility) would rightly refuse them, so these
    # entries accept implausible models; tests/unit/test_released.py checks the refusal on trained ones.
    accept = {"accept_implausible": True}
    config = {
        "data_dir": "data", "results_dir": "results", "device": "cpu",
        "datasets": {"digits": {"arch": "resnet20", "sigmas": [0.25], "evaluation": {"start": 0, "stride": 1, "count": 10}}},
        "methods": {
            "advmacer": {"digits": {"seeds": [0], "hparams": adv | {"gamma": 8.0, "beta": 16.0, "lbd": 2.0}}},
            "smoothadv": {"digits": {"seeds": [0, 1], "hparams": adv,
                                     "released": {"0.25": {"format": "smoothadv", "files": smoothadv} | accept}}},
            "macer": {"digits": {"seeds": [0],
                                 "released": {"0.25": {"format": "macer", "files": [str(macer)]} | accept}}},
            "consistency": {"digits": {"seeds": [], "published_logs": {"0.25": str(log)}}},
        },
        "ensembles": {"build": [{"dataset": "digits", "members": ["advmacer:1+smoothadv:2"], "schemes": ["average"]}]},
        "paper": {"main": "digits", "svhn": None, "imagenet": None, "table3_sigma": "0.25", "figure1_sigma": "0.25",
                  "figure3_sigma": "0.25"},
        "certify": {"n0": 100, "n": 300, "alpha": 0.001, "batch_size": 300, "shards": 1},
        "training_curves": {"every": 1, "images": 2, "n0": 100, "n": 100, "alpha": 0.001, "batch_size": 100},
        "report": {"radii": [0.0, 0.25], "figure_max_radius": 1.0},
        "cost": {"steps": 1},
        "resources": {"train": {"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime": "10m"},
                      "certify": {"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime": "10m"}},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, log


@pytest.fixture(scope="module")
def released_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("released")
    config, log = released_config(workdir)
    dry = snakemake(workdir, "-n", *TARGETS, config=config)
    assert dry.returncode == 0, dry.stderr[-3000:]
    result = snakemake(workdir, "--cores", "2", *TARGETS, config=config)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, log, dry, result


def test_tables_with_origin_marks_compile(released_run, tmp_path):
    """The origin marks (‡ released checkpoint, § published log) and their notes reach LaTeX as
    ASCII, and each .tex of this run compiles alone and \\input into a booktabs-only document."""
    require_pdflatex()
    written = sorted((released_run[0] / "results").glob("*.tex"))
    assert {"table1.tex", "table2.tex", "table5.tex", "comparison.tex"} <= {p.name for p in written}
    assert r"$^\ddagger$" in (released_run[0] / "results/table1.tex").read_text()
    for i, path in enumerate(written):
        check_tex_artefact(path, tmp_path / str(i))


def test_imported_slots_have_no_training_job(released_run):
    _, _, dry, _ = released_run
    counts = job_counts(dry)
    assert counts["train"] == 1  # AdvMacer only
    assert counts["import_model"] == 3 and counts["import_certification_log"] == 1
    trained = re.findall(r"train (\w+) on (\w+), sigma=", dry.stdout)
    assert trained == [("advmacer", "digits")]


def test_published_log_stands_for_its_row_restricted_to_the_evaluation_images(released_run):
    workdir, log, _, _ = released_run
    published = read_certificates(log)
    assert published["time"].tolist()[:3] == [1.25, 2.0, 1.5]  # h:mm:ss.ffffff, h:mm:ss and seconds
    first10 = published[published["idx"] < 10]
    imported = read_certificates(workdir / "results/published/digits/consistency/sigma0.25/certify.tsv")
    assert imported["idx"].tolist() == list(range(10))
    table1 = pd.read_csv(workdir / "results/table1.csv")
    row = table1[(table1["row"] == "Consistency") & (table1["metric"] == "acr")].iloc[0]
    assert row["origin"] == "published log"
    assert row["value"] == pytest.approx(average_certified_radius(first10))
    tex = (workdir / "results/table1.tex").read_text()
    assert r"Consistency \S{}" in tex and r"SmoothAdv $^\ddagger$" in tex
    assert "published certification log" in tex and "released checkpoint, certified by this workflow" in tex
    import json

    record = json.loads((workdir / "results/published/digits/consistency/sigma0.25/certify.json").read_text())
    assert {k: record["published_log"][k] for k in ("dataset", "num_classes", "sigma", "rows", "rows_in_source")} == {
        "dataset": "digits", "num_classes": 10, "sigma": 0.25, "rows": 10, "rows_in_source": 40}


def test_imported_models_are_certified_and_ensembled_like_trained_ones(released_run):
    workdir, _, _, result = released_run
    table1 = pd.read_csv(workdir / "results/table1.csv")
    origins = dict(zip(table1["row"], table1["origin"]))
    assert origins["SmoothAdv"] == "imported" and origins["MACER"] == "imported" and origins["AdvMacer"] == "trained"
    assert "EsbRS-AdvMacer×1+SmoothAdv×2" in origins
    # member outputs of the imported SmoothAdv models feed the ensemble
    assert (workdir / "results/outputs/digits/smoothadv/sigma0.25/seed1/shards/0.npz").is_file()
    import json

    record = json.loads((workdir / "results/certify/digits/smoothadv/sigma0.25/seed0/certify.json").read_text())
    assert record["model"]["train_seconds"] is None
    assert record["model"]["imported"]["format"] == "smoothadv" and record["model"]["imported"]["input_layer"] == "center"
    assert record["model"]["imported"]["source"].endswith("eps_64/noise_0.25/checkpoint.pth.tar")
    # the import measured its model on the 10 evaluation images (random weights: accepted by the switch if not passed)
    measured = record["model"]["imported"]["plausibility"]
    assert measured["images"] == 10 and measured["threshold"] == 0.2 and measured["sigma"] == 0.25
    assert measured["passed"] != measured["accepted_implausible"]


def test_training_time_cells_say_imported(released_run):
    workdir, _, _, _ = released_run
    tex = (workdir / "results/table2.tex").read_text()
    smoothadv = next(line for line in tex.splitlines() if line.startswith("SmoothAdv"))
    advmacer = next(line for line in tex.splitlines() if line.startswith("AdvMacer"))
    assert smoothadv.rstrip(" \\").endswith("imported") and advmacer.rstrip(" \\").endswith("h")
    figure = pd.read_csv(workdir / "results/figure1.csv")
    assert set(figure["model"]) == {"AdvMacer"}  # imported MACER has no training curve


def test_comparison_names_the_origin_of_each_cell(released_run):
    workdir, _, _, _ = released_run
    comparison = pd.read_csv(workdir / "results/comparison.csv")
    consistency = comparison[(comparison["table"] == "table1") & (comparison["row"] == "Consistency")]
    assert len(consistency) and set(consistency["origin"]) == {"published log"}
    assert "| published log |" in (workdir / "results/comparison.md").read_text()


def test_cost_estimate_reports_the_training_saved(released_run):
    workdir, _, _, _ = released_run
    text = (workdir / "results/cost_estimate.md").read_text()
    assert "2 imported models would take" in text and "for the full retraining grid" in text
    assert "1 imported models have no configured hparams" in text and "digits/macer" in text
    estimate = pd.read_csv(workdir / "results/cost_estimate.csv")
    saved = estimate[estimate["rule"] == "imported (not trained)"]
    assert list(saved["method"]) == ["smoothadv", "smoothadv"] and (saved["gpu_hours"] > 0).all()


def test_a_log_missing_evaluation_images_is_refused(tmp_path):
    config, log = released_config(tmp_path, log_rows=[i for i in range(40) if i != 7])
    result = snakemake(tmp_path, "--cores", "1", "results/published/digits/consistency/sigma0.25/certify.tsv",
                       config=config)
    assert result.returncode != 0
    assert f"error: published log {log} lacks 1 of the 10 evaluation images (first missing: [7])" in result.stderr
    assert not (tmp_path / "results/published/digits/consistency/sigma0.25/certify.tsv").exists()


def test_a_published_log_needs_no_dataset(tmp_path):
    """The evaluation indices of a log come from the dataset registry: no prepare_data job."""
    config, _ = released_config(tmp_path)
    result = snakemake(tmp_path, "-n", "results/published/digits/consistency/sigma0.25/certify.tsv", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result) == {"import_certification_log": 1}


def test_a_log_of_another_sigma_is_refused(tmp_path):
    """The rule hands the slot's σ to the import: a log in a noise_0.50 folder cannot stand for σ = 0.25."""
    config, log = released_config(tmp_path)
    wrong = tmp_path / "released" / "noise_0.50" / "log"
    wrong.parent.mkdir(parents=True)
    wrong.write_text(log.read_text())
    settings = yaml.safe_load(config.read_text())
    settings["methods"]["consistency"]["digits"]["published_logs"]["0.25"] = str(wrong)
    config.write_text(yaml.safe_dump(settings))
    target = "results/published/digits/consistency/sigma0.25/certify.tsv"
    result = snakemake(tmp_path, "--cores", "1", target, config=config)
    assert result.returncode != 0
    assert (f"error: published log {wrong}: its folder 'noise_0.50' says sigma=0.5, expected sigma=0.25 (the slot it "
            "is configured for)") in result.stderr
    assert not (tmp_path / target).exists()


def test_a_released_file_for_another_sigma_is_refused(tmp_path):
    config, _ = released_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    wrong = tmp_path / "released" / "noise_0.50" / "checkpoint.pth.tar"
    wrong.parent.mkdir(parents=True)
    cohen_file(wrong, randomise(ForeignCifarResNet(20, 10, in_channels=1), 3), "cifar_resnet20",
               ForeignCenter(DIGITS_MEAN))
    settings["methods"]["smoothadv"]["digits"]["released"]["0.25"]["files"][1] = str(wrong)
    settings["methods"]["smoothadv"]["digits"]["released"]["0.25"]["input_layer"] = "center"
    config.write_text(yaml.safe_dump(settings))
    target = "results/imported/digits/smoothadv/sigma0.25/seed1/model.pt"
    result = snakemake(tmp_path, "--cores", "1", target, config=config)
    assert result.returncode != 0
    assert "expected a model for sigma=0.25, found one trained at sigma=0.5 (its folder noise_0.5)" in result.stderr
    assert not (tmp_path / target).exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["smoothadv"]["digits"]["released"]["0.25"]["files"].pop(),
         "methods.smoothadv.digits.released.0.25: 1 files for 2 seed slots [0, 1]; give one file per seed"),
        (lambda m: m["advmacer"]["digits"].pop("hparams"),
         "methods.advmacer.digits: hparams are missing, and sigma 0.25 has no released checkpoints to import"),
        (lambda m: m["consistency"]["digits"]["published_logs"].update({"0.5": "x"}),
         "methods.consistency.digits.published_logs: sigma 0.5 is not in datasets.digits.sigmas"),
    ],
)
def test_inconsistent_released_configuration_is_refused(tmp_path, change, message):
    config, _ = released_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    change(settings["methods"])
    config.write_text(yaml.safe_dump(settings))
    result = snakemake(tmp_path, "-n", "results/table1.tex", config=config)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def _save_torchscript(net, path):
    torch.jit.save(torch.jit.script(net), str(path))


def _save_exported(net, path):
    program = torch.export.export(net.eval(), (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(path))


def _load_torchscript(path):
    return torch.jit.load(str(path))


def _load_exported(path):
    from rslib.models.checkpoint import load_exported

    return load_exported(path)


@pytest.mark.parametrize("fmt, name, save, load", [
    ("torchscript", "mlp.ts", _save_torchscript, _load_torchscript),
    ("exported", "mlp.pt2", _save_exported, _load_exported),
])
def test_a_network_of_another_architecture_fills_a_slot(tmp_path, fmt, name, save, load):
    """A TorchScript or torch.export network of an architecture rslib does not define (an MLP) in
    a `released:` slot: imported through the plausibility check (it is trained: it passes),
    recorded with the archive's SHA-256, and certified by the workflow as Smooth.certify
    certifies the archive's network with the run's noise seed, row for row."""
    from foreign_models import DigitsMLP, train_on_digits

    from rslib.certification.smooth import Smooth
    from rslib.data.load import load_split
    from rslib.data.prepare import prepare_dataset
    from rslib.runtime.io import file_digest

    meta = prepare_dataset("digits", tmp_path / "own_data")
    archive = tmp_path / "mine" / name
    archive.parent.mkdir()
    save(train_on_digits(DigitsMLP(), load_split(meta, "train")), archive)
    config, _ = released_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["methods"]["gaussian"] = {"digits": {"seeds": [0], "released": {
        "0.25": {"format": fmt, "files": [str(archive)]}}}}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    target = "results/certify/digits/gaussian/sigma0.25/seed0/certify.tsv"
    result = snakemake(tmp_path, "--cores", "1", target, config=config)
    assert result.returncode == 0, result.stderr[-4000:]
    assert job_counts(result)["import_model"] == 1

    import json

    record = json.loads((tmp_path / "results/certify/digits/gaussian/sigma0.25/seed0/certify.json").read_text())
    imported = record["model"]["imported"]
    assert imported["format"] == fmt and imported["sha256"] == file_digest(archive, "sha256")
    assert imported["input_layer"] == "none" and imported["plausibility"]["passed"]
    smooth = Smooth(load(archive), 10, 0.25, noise_seed=0, device="cpu")
    test_set = load_split(meta, "test")
    certified = read_certificates(tmp_path / target)
    assert certified["idx"].tolist() == list(range(10))
    for row in certified.itertuples():
        x, label = test_set[row.idx]
        assert (row.predict, row.radius) == smooth.certify(x, 100, 300, 0.001, 300, index=row.idx)
        assert row.label == label
