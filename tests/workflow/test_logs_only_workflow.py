"""A run that reports only published certification logs (no training, no certification, no
dataset on disk): every artefact is built, every row is its log's figures, and the comparison
finds each cell the paper printed "identical" (000 Sec. 4 built its baseline rows from the
authors' logs; issue: logs-only runs).

The logs are fabricated here in Cohen et al.'s format (h:mm:ss times, radii to 3 significant
digits, more images than the evaluation subset) so that their first 500 images have exactly the
paper's printed SmoothAdv, SmoothMix and Consistency numbers, as the authors' real logs do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_helpers import REPO, job_counts, snakemake


IMAGES = 500  # 000 Tables 5-7: the first 500 CIFAR-10 test images
#: (method, σ) → the row label the paper uses; the rows the authors published logs for
LOGS = {("smoothadv", s): "SmoothAdv" for s in ("0.25", "0.50", "1.00")}
LOGS |= {("consistency", s): "Consistency" for s in ("0.25", "0.50", "1.00")}
LOGS |= {("smoothmix", s): "SmoothMix" for s in ("0.25", "0.50")}


def paper_figures(label: str, sigma: str) -> tuple[dict[float, float], float]:
    """The paper's certified accuracy at each printed radius (r = 0: clean accuracy) and ACR of a row."""
    reported = pd.read_csv(REPO / "paper/reported.csv", dtype={"sigma": str})
    rows = reported[(reported["row"] == label) & (reported["sigma"] == sigma)]
    at = {0.0: float(rows.query("table == 'table1' and metric == 'accuracy'")["value"].item())}
    for metric, value in zip(rows["metric"], rows["value"]):
        if metric.startswith("r="):
            at[float(metric[2:])] = float(value)
    return at, float(rows.query("table == 'table1' and metric == 'acr'")["value"].item())


def fabricate_log(path: Path, accuracy_at: dict[float, float], acr: float, sigma: float, seed: int) -> None:
    """A Cohen-format log of 550 images whose first 500 certify exactly ``accuracy_at`` and ``acr``."""
    rng = np.random.default_rng(seed)
    radii = sorted(accuracy_at)
    counts = [round(accuracy_at[r] * IMAGES) for r in radii] + [0]
    top = 3.8 * sigma  # the largest radius CERTIFY gives at n = 100,000, α = 0.001
    bins = []  # (images, lowest, highest radius) of the correct images, bin by bin
    for k, r in enumerate(radii):
        if counts[k] - counts[k + 1]:
            high = radii[k + 1] - 0.002 if k + 1 < len(radii) else top
            bins.append((counts[k] - counts[k + 1], max(r, 0.001), min(high, top)))
    lowest, highest = sum(n * lo for n, lo, _ in bins), sum(n * hi for n, _, hi in bins)
    t = (acr * IMAGES - lowest) / (highest - lowest)
    assert 0.0 <= t <= 1.0, "the paper's figures are not those of any log"
    correct = []
    for n, lo, hi in bins:
        correct += [[float(f"{lo + t * (hi - lo):.3}"), lo, hi] for _ in range(n)]
    for item in correct:  # radii are printed to 3 significant digits: nudge until the sum is the ACR's
        gap = acr * IMAGES - sum(c[0] for c in correct)
        if abs(gap) < 0.05:
            break
        step = 0.001 if item[0] < 1 else 0.01
        moved = float(f"{item[0] + np.sign(gap) * min(abs(gap), 50 * step):.3}")
        item[0] = min(max(moved, item[1]), item[2])
    wrong = IMAGES - len(correct)
    rows = [(r, True) for r, _, _ in correct] + [(0.0 if k % 2 else 0.31, False) for k in range(wrong)]
    order = rng.permutation(IMAGES)
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for i in range(IMAGES + 50):
        radius, right = rows[order[i]] if i < IMAGES else (0.2, True)
        label = int(rng.integers(10))
        predict = label if right else (-1 if radius == 0.0 else (label + 1) % 10)
        time = "0:00:14.105382" if i % 2 else "0:00:13"
        lines.append(f"{i}\t{label}\t{predict}\t{radius:.3}\t{int(right)}\t{time}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def first_images(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t")
    return df[df["idx"] < IMAGES]


@pytest.fixture(scope="module")
def logs_only_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("logs-only")
    logs, methods = {}, {}
    for k, ((method, sigma), label) in enumerate(LOGS.items()):
        at, acr = paper_figures(label, sigma)
        path = workdir / "released" / method / f"noise_{sigma}" / "test" / f"sigma_{sigma}"
        fabricate_log(path, at, acr, float(sigma), seed=k)
        logs[(method, sigma)] = path
        methods.setdefault(method, {"cifar10": {"seeds": [], "published_logs": {}}})
        methods[method]["cifar10"]["published_logs"][sigma] = str(path)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(methods=methods, ensembles={"build": []},
                  paper={"main": "cifar10", "svhn": None, "imagenet": None})
    config["datasets"] = {"cifar10": config["datasets"]["cifar10"]}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(workdir, "--cores", "2", "all", config=path)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, logs, result


def test_a_logs_only_run_builds_every_artefact_without_a_dataset_or_a_gpu_job(logs_only_run):
    workdir, _, result = logs_only_run
    results = workdir / "results"
    for name in ["certified_accuracy.tex", "certified_accuracy.pdf", "ensembles.tex", "adaptive.csv",
                 *[f"table{k}.tex" for k in range(1, 9)], "figure1.pdf", "figure3.pdf",
                 *[f"curves/cifar10_sigma{s}.pdf" for s in ("0.25", "0.50", "1.00")], "comparison.md",
                 "comparison_summary.csv", "cost_estimate.md", "provenance.csv"]:
        assert (results / name).is_file(), name
    assert not (workdir / "data").exists()  # nothing downloaded: split sizes come from the registry
    jobs = job_counts(result)
    assert jobs["import_certification_log"] == len(LOGS)
    assert "prepare_data" not in jobs and "measure_costs" not in jobs and "train" not in jobs
    assert "Nothing to measure" in (results / "cost_estimate.md").read_text()


def test_each_row_is_its_logs_figures_on_the_evaluation_images(logs_only_run):
    workdir, logs, _ = logs_only_run
    table1 = pd.read_csv(workdir / "results/table1.csv", dtype={"sigma": str}).set_index(["row", "sigma", "metric"])
    sweep = pd.concat([pd.read_csv(workdir / f"results/table{k}.csv", dtype={"sigma": str}) for k in (5, 6, 7)])
    sweep = sweep.set_index(["row", "sigma", "metric"])
    for (method, sigma), label in LOGS.items():
        df = first_images(logs[(method, sigma)])
        certified = df["correct"].to_numpy() == 1
        radius = df["radius"].to_numpy()
        assert table1.loc[(label, sigma, "acr"), "value"] == pytest.approx(np.mean(radius * certified), abs=1e-12)
        assert table1.loc[(label, sigma, "accuracy"), "value"] == pytest.approx(np.mean(certified), abs=1e-12)
        assert table1.loc[(label, sigma, "acr"), "origin"] == "published log"
        for metric in [m for (row, s, m) in sweep.index if (row, s) == (label, sigma)]:
            if metric.startswith("r="):
                expected = np.mean(certified & (radius >= float(metric[2:])))
                assert sweep.loc[(label, sigma, metric), "value"] == pytest.approx(expected, abs=1e-12)


def test_every_cell_the_paper_prints_is_identical(logs_only_run):
    workdir, _, _ = logs_only_run
    compared = pd.read_csv(workdir / "results/comparison.csv")
    # Table 1: 8 rows × 2 metrics; Table 2: SmoothAdv ACR × 3; Tables 5-7: SmoothAdv and SmoothMix rows
    assert len(compared) == 16 + 3 + 20 + 20 + 11
    assert set(compared["verdict"]) == {"identical"}, compared[compared["verdict"] != "identical"].to_string()
    assert compared[["low", "high"]].isna().all().all()  # compared exactly, never within an interval
    summary = pd.read_csv(workdir / "results/comparison_summary.csv").set_index("table")["summary"]
    assert summary["table1"] == "Table 1: 16 of 16 published-log cells identical"
    assert summary["table7"] == "Table 7: 11 of 11 published-log cells identical"
    assert "**70 of 70 published-log cells identical.**" in (workdir / "results/comparison.md").read_text()
