"""rslib.report.run_summary: the table a person reads at the end of `make demo`."""

from __future__ import annotations

import pandas as pd

from rslib.report.run_summary import main, render, stage_seconds


def _results(tmp_path):
    pd.DataFrame({
        "dataset": ["digits"] * 3, "method": ["gaussian", "advmacer", "advmacer"], "sigma": [0.25, 0.25, 0.5],
        "seed": [0, 1, 0], "images": [100.0] * 3, "acr": [0.4320193911129052, 0.2629815627406651, 0.2],
        "accuracy": [0.94, 0.95, 0.61],
    }).to_csv(tmp_path / "certified_accuracy.csv", index=False)
    pd.DataFrame({
        "dataset": ["digits"], "sigma": [0.25], "ensemble": ["advmacer:2"], "label": ["EsbRS-AdvMacer×2"],
        "scheme": ["optimal-paper"], "sound": [False], "images": [100.0], "acr": [0.5], "accuracy": [0.95],
    }).to_csv(tmp_path / "ensembles.csv", index=False)
    for rule, name, seconds in [("train", "digits/gaussian/sigma0.25/seed0.tsv", 10.5),
                                ("train", "digits/advmacer/sigma0.25/seed1.tsv", 20.0),
                                ("certify", "digits/gaussian/sigma0.25/seed0/shard0.tsv", 5.0),
                                ("paper", "table1.tsv", 1.25)]:
        path = tmp_path / "benchmarks" / rule / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{seconds}\t100\n")
    (tmp_path / "benchmarks" / "train" / "broken.tsv").write_text("")  # a job interrupted while writing it
    (tmp_path / "table1.tex").write_text("x")
    return tmp_path


def test_compact_table_has_three_decimals_and_marks_the_best_per_sigma(tmp_path):
    text = render(_results(tmp_path), wall_seconds=75)
    lines = text.splitlines()
    gaussian = next(line for line in lines if "gaussian seed 0" in line)
    assert "0.940 " in gaussian and "0.432 " in gaussian and "4320193911" not in text
    advmacer = next(line for line in lines if "advmacer seed 1" in line)
    assert "0.950*" in advmacer and "0.263 " in advmacer  # best accuracy at σ = 0.25 (tied with the ensemble)
    ensemble = next(line for line in lines if "EsbRS-AdvMacer×2" in line)
    assert "optimal-paper (†: not sound)" in ensemble and "0.950*" in ensemble and "0.500*" in ensemble
    sigma50 = next(line for line in lines if "advmacer seed 0" in line)
    assert "0.610*" in sigma50 and "0.200*" in sigma50  # alone at σ = 0.50: best of its own group
    assert "wall time of this run" in text and "1:15" in text
    assert "table{1..8}.{tex,csv}" in text and "comparison" not in text.split("Artefacts")[1]


def test_stage_seconds_sum_the_benchmark_files_per_stage(tmp_path):
    stages = stage_seconds(_results(tmp_path)).set_index("stage")
    assert stages.loc["training", "jobs"] == 2 and stages.loc["training", "seconds"] == 30.5
    assert stages.loc["certification", "seconds"] == 5.0
    assert stages.loc["tables, figures, costs", "seconds"] == 1.25
    assert stages.loc["ensembles", "jobs"] == 0


def test_cli_refuses_a_missing_results_folder(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nope")])
    assert exit_.value.code == 2
    assert "no results folder" in capsys.readouterr().err
