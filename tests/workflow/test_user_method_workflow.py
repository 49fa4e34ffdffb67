"""A method of the user's own in the real workflow (tests/configs/user_method.yaml: MACER and
tests/workflow/user_method.py on digits, 1 epoch, 10 images, and their 2-ensemble): the module is
found in the run's working directory or on PYTHONPATH, a misspelt key of it is refused before any
job runs, and its rows follow the paper's in the single-model tables and Figure 1, marked ¶, and
appear in the comparison as not comparable, "not in the paper"."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from latex_helpers import check_tex_artefact, require_pdflatex
from workflow_helpers import REPO, SNAKEMAKE, job_counts, snakemake

CONFIG = REPO / "tests/configs/user_method.yaml"
MODULE = Path(__file__).with_name("user_method.py")
SINGLE_MODEL_TABLES = ("table1", "table2", "table5", "table8")
TARGETS = [*(f"results/{t}.csv" for t in SINGLE_MODEL_TABLES), "results/figure1.csv", "results/comparison.md",
           "results/cost_estimate.md", "results/ensembles.csv"]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """The tables, Figure 1, the comparison and the cost estimate, with the module in the working directory."""
    workdir = tmp_path_factory.mktemp("user_method")
    shutil.copy(MODULE, workdir / MODULE.name)
    result = snakemake(workdir, "--cores", "2", *TARGETS, config=CONFIG)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_the_users_rows_follow_the_papers_in_every_single_model_table(user_run):
    from rslib.models.checkpoint import load_model

    for name in SINGLE_MODEL_TABLES:
        cells = pd.read_csv(user_run / f"results/{name}.csv")
        assert list(dict.fromkeys(cells["row"])) == ["MACER", "Gaussian-LS"], name
        own = cells[cells["row"] == "Gaussian-LS"]
        assert set(own["deviation"]) == {"not in the paper"} and set(own["origin"]) == {"trained"}
        assert set(own["metric"]) == set(cells[cells["row"] == "MACER"]["metric"]), name
        tex = (user_run / f"results/{name}.tex").read_text()
        assert r"Gaussian-LS \P{}" in tex and r"\P{} a method of this run's own" in tex, name
    curves = pd.read_csv(user_run / "results/figure1.csv")
    assert list(dict.fromkeys(curves["model"])) == ["MACER", "Gaussian-LS ¶"]
    _, spec, _ = load_model(user_run / "results/models/digits/gaussian_ls/sigma0.25/seed0/model.pt",
                            dataset="digits", sigma=0.25)
    assert spec.method == "gaussian_ls" and spec.hparams["label_smoothing"] == 0.1
    assert "gaussian_ls" in (user_run / "results/costs/measured.json").read_text()
    ensembles = pd.read_csv(user_run / "results/ensembles.csv")
    assert ensembles[["ensemble", "scheme", "images"]].values.tolist() == [["gaussian_ls:1+macer:1", "average", 10]]


def test_the_comparison_lists_the_users_rows_as_not_in_the_paper(user_run):
    table = pd.read_csv(user_run / "results/comparison.csv")
    own = table[table["row"] == "Gaussian-LS"]
    assert len(own) == sum(len(pd.read_csv(user_run / f"results/{t}.csv").query("row == 'Gaussian-LS'"))
                           for t in SINGLE_MODEL_TABLES)
    assert own["paper"].isna().all() and set(own["verdict"]) == {"not comparable"}
    assert set(own["reason"]) == {"not in the paper"}
    assert table[table["row"] == "MACER"]["paper"].notna().all()  # the paper's rows are compared as before
    md = (user_run / "results/comparison.md").read_text()
    compared, _, section = md.partition("## Rows not in the paper")
    assert "Gaussian-LS" not in compared and "| table1 | 0.25 | Gaussian-LS | acr |" in section
    assert "- Table 1: none of 2 cells comparable (dataset digits (the paper: CIFAR-10)); 2 cells of rows not in " \
           "the paper" in compared


def test_the_marked_tables_compile(user_run, tmp_path):
    """¶ is \\P{} in pure-ASCII LaTeX: every table with the user's rows and comparison.tex compile."""
    require_pdflatex()
    for name in (*SINGLE_MODEL_TABLES, "comparison"):
        check_tex_artefact(user_run / f"results/{name}.tex", tmp_path / name)
    assert r"Gaussian-LS \P{} & acr & -- &" in (user_run / "results/comparison.tex").read_text()


def _dry_run(workdir: Path, config: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
                           "-n", "results/table1.csv"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_the_module_is_found_on_pythonpath_and_a_misspelt_key_is_refused_before_any_job(tmp_path):
    missing = _dry_run(tmp_path, CONFIG)  # not in the working directory, not on the path
    assert missing.returncode != 0
    assert f"methods.gaussian_ls.module: no module 'user_method' on PYTHONPATH, among the installed packages or in " \
           f"the working directory {tmp_path}" in missing.stdout + missing.stderr
    assert _dry_run(tmp_path, CONFIG, pythonpath=str(MODULE.parent)).returncode == 0
    config = yaml.safe_load(CONFIG.read_text())
    hparams = config["methods"]["gaussian_ls"]["digits"]["hparams"]
    hparams["label_smothing"] = hparams.pop("label_smoothing")
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(yaml.safe_dump(config))
    result = _dry_run(tmp_path, misspelt, pythonpath=str(MODULE.parent))
    assert result.returncode != 0
    assert ("methods.gaussian_ls.digits.hparams: gaussian_ls does not read hyper-parameter 'label_smothing'; "
            "did you mean 'label_smoothing'?") in result.stdout + result.stderr  # Snakemake prints it on stdout


def test_editing_the_users_module_retrains_only_its_models(user_run):
    """The train rule's version carries the SHA-256 of the user's module: after the file is edited, a
    dry run schedules its model's training again (params changed), and MACER's not at all."""
    module = user_run / MODULE.name
    original = module.read_text()
    try:
        module.write_text(original + "\n# the loss, edited\n")
        result = snakemake(user_run, "-n", *TARGETS, config=CONFIG)
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout + result.stderr
        assert job_counts(result)["train"] == 1
        assert ": train gaussian_ls on digits, sigma=0.25, seed 0" in out and "train macer" not in out
        assert "Params have changed since last execution" in out
        outputs = [line.strip() for line in out.splitlines() if line.strip().startswith("output: ")]
        assert "output: results/outputs/digits/gaussian_ls/sigma0.25/seed0/shards/0.npz" in outputs
        assert not any("digits/macer/" in line for line in outputs), outputs  # MACER's outputs and certificate stay
    finally:
        module.write_text(original)
    unchanged = snakemake(user_run, "-n", *TARGETS, config=CONFIG)  # the same bytes again: the same version
    assert unchanged.returncode == 0 and "rule train:" not in unchanged.stdout + unchanged.stderr
