"""Did it reproduce? (rslib.report.comparison, rslib.report.metrics.bootstrap_intervals): the seeded bootstrap
interval of each cell against a direct computation, the three verdicts, the per-table summary,
what makes a cell not comparable, and the seed spread in the tables."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from rslib.report.metrics import average_certified_radius, bootstrap_intervals, certified_accuracy
from rslib.certification.tsv import read_certificates
from rslib.report.comparison import compare, summarize_verdicts, verdict, write_comparison
from rslib.experiment.comparability import configuration_deviations
from rslib.experiment.artefacts import Source, table_sources
from rslib.report.tables import Uncertainty, build_table, write_table
from test_paper_tables import PAPER, configured, fake_certificate
from workflow_helpers import REPO


def test_bootstrap_interval_of_acr_is_the_documented_resampling(tmp_path):
    """The documented procedure written out replicate by replicate with the public metrics."""
    df = read_certificates(fake_certificate(tmp_path / "c.tsv", seed=3, n=60))
    low, high = bootstrap_intervals([df], [0.5], replicates=300, level=0.9, seed=7)["acr"]
    rng = np.random.default_rng(7)
    rng.integers(1, size=300)  # the seed draw comes first (one seed here)
    images = rng.integers(60, size=(300, 60))
    direct = [average_certified_radius(df.iloc[row]) for row in images]
    assert (low, high) == pytest.approx(tuple(np.quantile(direct, [0.05, 0.95])), abs=1e-12)
    assert low < average_certified_radius(df) < high


def test_bootstrap_over_seeds_draws_a_seed_then_images(tmp_path):
    frames = [read_certificates(fake_certificate(tmp_path / f"s{k}.tsv", seed=k, n=30)) for k in range(3)]
    got = bootstrap_intervals(frames, [0.5], replicates=200, seed=1)
    rng = np.random.default_rng(1)
    which = rng.integers(3, size=200)
    images = rng.integers(30, size=(200, 30))
    direct = [certified_accuracy(frames[s].iloc[row], 0.5) for s, row in zip(which, images)]
    assert got["r=0.5"] == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])), abs=1e-12)
    # seeded: a rerun gives the same interval
    assert bootstrap_intervals(frames, [0.5], replicates=200, seed=1) == got
    with pytest.raises(ValueError, match="different images"):
        bootstrap_intervals([frames[0], frames[1].iloc[:-1]], [0.5])


def test_bootstrap_interval_of_a_proportion_has_the_binomial_width():
    """500 images at accuracy 0.7: the 95% interval spans ≈ 2·1.96·√(0.7·0.3/500) = 0.080."""
    correct = np.r_[np.ones(350), np.zeros(150)].astype(int)
    df = pd.DataFrame({"idx": range(500), "label": 0, "predict": 0, "radius": 0.5 * correct, "correct": correct,
                       "time": 0.0})
    low, high = bootstrap_intervals([df], [], replicates=4000)["accuracy"]
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 500), rel=0.1)


def cell(**kw):
    base = {"table": "table1", "sigma": "0.25", "row": "AdvMacer", "metric": "acr", "paper": 0.554, "ours": 0.53,
            "low": 0.50, "high": 0.56, "deviation": "", "device": ""}
    return {**base, **kw}


def test_each_verdict_and_its_reason():
    assert verdict(cell(), 0.25) == ("reproduced", "paper 0.554 inside [0.500, 0.560]")
    assert verdict(cell(high=0.55), 0.25) == ("differs", "paper 0.554 outside [0.500, 0.550]")
    assert verdict(cell(deviation="dataset digits (the paper: CIFAR-10)"), 0.25) == (
        "not comparable", "dataset digits (the paper: CIFAR-10)")
    # times: ratios, and only on the paper's GPU
    hours = cell(metric="train_hours", paper=10.0, ours=12.0, low=float("nan"), high=float("nan"))
    assert verdict({**hours, "device": "cpu:x86_64 (2 threads)"}, 0.25) == (
        "not comparable", "hardware cpu:x86_64 (2 threads) (the paper: NVIDIA V100)")
    assert verdict({**hours, "device": "cuda:Tesla V100-SXM2-32GB"}, 0.25)[0] == "reproduced"
    assert verdict({**hours, "device": "cuda:Tesla V100-SXM2-32GB", "ours": 13.0}, 0.25) == (
        "differs", "ours/paper = 1.30 (tolerance ×1.25)")
    assert verdict({**hours, "device": "cuda:NVIDIA H200"}, 0.25)[0] == "not comparable"


def test_compare_gives_verdicts_and_the_summary_counts_them(tmp_path):
    reported = tmp_path / "reported.csv"
    reported.write_text("table,sigma,row,metric,value,source_line\n"
                        "table5,0.25,AdvMacer,acr,0.554,1\ntable5,0.25,AdvMacer,r=0.5,0.60,1\n"
                        "table5,0.25,MACER,acr,0.531,1\ntable2,0.25,MACER,train_hours,32.8,2\n"
                        "table2,0.25,MACER,acr,0.531,2\n")
    ours = tmp_path / "t.csv"
    ours.write_text("table,sigma,row,metric,value,origin,low,high,seeds,seed_mean,seed_min,seed_max,deviation,device\n"
                    "table5,0.25,AdvMacer,acr,0.55,trained,0.52,0.58,3,0.54,0.53,0.55,,\n"
                    "table5,0.25,AdvMacer,r=0.5,0.50,trained,0.46,0.55,3,0.5,0.49,0.51,,\n"
                    "table5,0.25,MACER,acr,0.50,trained,0.47,0.54,1,0.5,0.5,0.5,,\n"
                    "table2,0.25,MACER,train_hours,1.0,trained,,,,,,,,cpu:x86_64\n"
                    "table2,0.25,MACER,acr,0.50,trained,0.47,0.54,1,0.5,0.5,0.5,macer epochs 1 (the paper: 440),\n")
    table = compare(reported, [ours])
    got = dict(zip(table["row"] + "/" + table["metric"] + "/" + table["table"], table["verdict"]))
    assert got == {"AdvMacer/acr/table5": "reproduced", "AdvMacer/r=0.5/table5": "differs",
                   "MACER/acr/table5": "reproduced", "MACER/train_hours/table2": "not comparable",
                   "MACER/acr/table2": "not comparable"}
    assert table.loc[table["metric"] == "train_hours", "ratio"].item() == pytest.approx(1.0 / 32.8)
    summary = summarize_verdicts(table).set_index("table")
    assert summary.loc["table5", "summary"] == "Table 5: 2 of 3 cells reproduced, 1 differ"
    assert summary.loc["table2", "summary"].startswith("Table 2: none of 2 cells comparable (")
    assert summary.loc["table1", "summary"] == "Table 1: no cell regenerated by this run"
    assert summary.loc[["table2", "table5"], ["reproduced", "differs", "not_comparable"]].values.tolist() == [
        [0, 0, 2], [2, 1, 0]]
    md, tex, csv, short = (tmp_path / f for f in ("c.md", "c.tex", "c.csv", "s.csv"))
    write_comparison(reported, [ours], "main: cifar10", md, tex, csv, short)
    text = md.read_text()
    assert "**2 of 3 cells reproduced, 1 differ; 2 not comparable.**" in text
    assert "- Table 5: 2 of 3 cells reproduced, 1 differ" in text
    assert "| 0.540 [0.530, 0.550] (3) | reproduced |" in text
    assert "−" not in tex.read_text() and "$-$" in tex.read_text()


def test_a_published_log_cell_is_identical_or_differs_at_the_printed_precision():
    """A published log is the data the paper printed: compared by rounding, never by an interval."""
    published = cell(origin="published log", paper=0.535, decimals=3, low=float("nan"), high=float("nan"))
    assert verdict({**published, "ours": 0.5347202}, 0.25) == (
        "identical", "published log: ours 0.5347 rounds to the paper's 0.535 (3 decimals as printed)")
    # the λ = 20 log of the same method: 0.543, inside a 500-image interval but not the printed number
    assert verdict({**published, "ours": 0.543128, "low": 0.50, "high": 0.58}, 0.25) == (
        "differs", "published log: ours 0.5431 does not round to the paper's 0.535 (3 decimals as printed)")
    # printed "0.45" (two decimals) and "0.0" (one): either tie rule counts
    two = {**published, "paper": 0.45, "decimals": 2}
    assert verdict({**two, "ours": 0.448}, 0.25)[0] == "identical"
    assert verdict({**two, "ours": 0.455}, 0.25)[0] == "identical"
    assert verdict({**two, "ours": 0.444}, 0.25)[0] == "differs"
    assert verdict({**published, "paper": 0.0, "decimals": 1, "ours": 0.0}, 0.25)[0] == "identical"
    # a configuration difference still makes it not comparable (e.g. other evaluation images)
    assert verdict({**published, "ours": 0.535, "deviation": "evaluation on every 20th image"}, 0.25)[0] == (
        "not comparable")


def test_compare_reads_the_printed_precision_and_counts_identical_cells(tmp_path):
    reported = tmp_path / "reported.csv"
    reported.write_text("table,sigma,row,metric,value,source_line\n"
                        "table5,0.25,SmoothAdv,r=0.75,0.45,1\ntable5,0.25,SmoothAdv,acr,0.541,1\n"
                        "table5,0.25,MACER,acr,0.518,1\ntable5,0.25,AdvMacer,acr,0.554,1\n")
    ours = tmp_path / "t.csv"
    ours.write_text("table,sigma,row,metric,value,origin,low,high,seeds,seed_mean,seed_min,seed_max,deviation,device\n"
                    "table5,0.25,SmoothAdv,r=0.75,0.450,published log,,,1,0.45,0.45,0.45,,\n"
                    "table5,0.25,SmoothAdv,acr,0.5412,published log,,,1,0.5412,0.5412,0.5412,,\n"
                    "table5,0.25,MACER,acr,0.530,published log,,,1,0.53,0.53,0.53,,\n"
                    "table5,0.25,AdvMacer,acr,0.55,trained,0.52,0.58,1,0.55,0.55,0.55,,\n")
    table = compare(reported, [ours])
    smoothadv = table[table["row"] == "SmoothAdv"].set_index("metric")
    assert smoothadv["decimals"].to_dict() == {"acr": 3, "r=0.75": 2}
    assert dict(zip(table["row"] + "/" + table["metric"], table["verdict"])) == {
        "AdvMacer/acr": "reproduced", "MACER/acr": "differs", "SmoothAdv/acr": "identical",
        "SmoothAdv/r=0.75": "identical"}
    summary = summarize_verdicts(table).set_index("table")
    assert summary.loc["table5", "summary"] == (
        "Table 5: 2 of 3 published-log cells identical, 1 differ; 1 of 1 cells reproduced, 0 differ")
    assert summary.loc["table5", ["identical", "reproduced", "differs", "not_comparable"]].tolist() == [2, 1, 1, 0]
    md, tex, csv, short = (tmp_path / f for f in ("c.md", "c.tex", "c.csv", "s.csv"))
    write_comparison(reported, [ours], "main: cifar10", md, tex, csv, short)
    text = md.read_text()
    assert "**2 of 3 published-log cells identical, 1 differ; 1 of 1 cells reproduced, 0 differ.**" in text
    # the paper's value as printed (0.45, not 0.450), and no interval for a published log
    assert "| table5 | 0.25 | SmoothAdv | r=0.75 | 0.45 | 0.450 | +0.000 |  |  | identical |" in text


@pytest.fixture(scope="module")
def paper_config():
    from snakemake.utils import validate

    reference = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(reference, str(REPO / "schemas/config.schema.yaml"))
    return reference


def test_a_cell_is_comparable_only_under_the_papers_configuration(paper_config):
    run = copy.deepcopy(paper_config)
    assert configuration_deviations(run, paper_config, "table1", "0.25", ["advmacer"]) == []
    run["methods"]["advmacer"]["cifar10"]["hparams"]["epochs"] = 30
    run["datasets"]["cifar10"]["evaluation"] = {"start": 0, "stride": 1, "count": 100}
    run["certify"]["n"] = 10000
    assert configuration_deviations(run, paper_config, "table1", "0.25", ["advmacer"]) == [
        "evaluation on the first 100 test images (the paper: the first 500 test images)",
        "certify.n 10000 (the paper: 100000)",
        "advmacer epochs 30 (the paper: 150)"]
    # an imported row (no trained method) from a published log (certified elsewhere): only the images count
    assert configuration_deviations(run, paper_config, "table1", "0.25", [], certified_here=False) == [
        "evaluation on the first 100 test images (the paper: the first 500 test images)"]
    # a per-σ override is compared at its σ only
    run = copy.deepcopy(paper_config)
    run["methods"]["macer"]["cifar10"]["by_sigma"]["0.50"]["lbd"] = 12.0
    assert configuration_deviations(run, paper_config, "table1", "0.25", ["macer"]) == []
    assert configuration_deviations(run, paper_config, "table1", "0.50", ["macer"]) == [
        "macer lbd 12.0 (the paper: 4.0)"]
    run["ensembles"]["optimal"]["t"] = 0.5
    assert configuration_deviations(run, paper_config, "table3", "0.25", [], ["optimal"]) == [
        "ensembles.optimal differs from the paper's"]
    demo = yaml.safe_load((REPO / "demo/config.yaml").read_text())
    assert configuration_deviations(demo, paper_config, "table8", "0.25", ["advmacer"]) == [
        "dataset digits (the paper: SVHN)"]


def test_tables_carry_intervals_and_optionally_show_seed_statistics(tmp_path):
    sources = [s for s in table_sources("table5", PAPER, configured()) if s.single]
    advmacer = next(s for s in sources if s.name == "advmacer")
    paths = [fake_certificate(tmp_path / f"{k}.tsv", k) for k, _ in enumerate(sources)]
    more = [[fake_certificate(tmp_path / f"{k}-{j}.tsv", 10 * k + j) for j in (1, 2)] if s is advmacer else []
            for k, s in enumerate(sources)]
    curves = []
    for k, _ in enumerate(sources):
        curve = tmp_path / f"curve{k}.csv"
        pd.DataFrame({"epoch": [1], "train_seconds": [60.0], "acr": [0.1], "accuracy": [0.5],
                      "images": [10]}).to_csv(curve, index=False)
        curves.append(str(curve))
    deviations = ["advmacer epochs 1 (the paper: 150)" if s is advmacer else "" for s in sources]
    kwargs = dict(seed_certificates=more, deviations=deviations, uncertainty=Uncertainty(replicates=200))
    write_table("table5", sources, paths, curves, [{}] * len(sources), [], [], "cifar10", str(tmp_path / "t.tex"),
                str(tmp_path / "t.csv"), **kwargs)
    records = pd.read_csv(tmp_path / "t.csv").set_index(["row", "metric"])
    acr = [average_certified_radius(read_certificates(p)) for p in [paths[sources.index(advmacer)],
                                                                     *more[sources.index(advmacer)]]]
    row = records.loc[("AdvMacer", "acr")]
    assert row["value"] == pytest.approx(acr[0])  # the table's value is the first seed's
    assert (row["seeds"], row["seed_mean"], row["seed_min"], row["seed_max"]) == pytest.approx(
        (3, np.mean(acr), min(acr), max(acr)))
    assert row["low"] < row["high"] and row["deviation"] == "advmacer epochs 1 (the paper: 150)"
    assert records.loc[("MACER", "acr"), "seeds"] == 1
    assert "±" not in (tmp_path / "t.tex").read_text()
    write_table("table5", sources, paths, curves, [{}] * len(sources), [], [], "cifar10", str(tmp_path / "s.tex"),
                str(tmp_path / "s.csv"), **{**kwargs, "uncertainty": Uncertainty(replicates=200,
                                                                                 seed_statistics=True)})
    tex = (tmp_path / "s.tex").read_text()
    sd = float(np.std(acr, ddof=1))
    assert f"{np.mean(acr):.3f}$\\pm${sd:.3f}" in tex and "mean $\\pm$ sd over trained seeds" in tex
    # the long-format values (the comparison's "ours") do not change with the display
    assert pd.read_csv(tmp_path / "s.csv")["value"].tolist() == pd.read_csv(tmp_path / "t.csv")["value"].tolist()


def test_seed_statistics_bold_the_best_mean():
    a, b = Source("cifar10", "0.25", "advmacer"), Source("cifar10", "0.25", "macer")
    stats = {a: {"acr": 0.5, "accuracy": 0.8}, b: {"acr": 0.6, "accuracy": 0.8}}
    spread = {a: {"acr": (0.7, 0.01), "accuracy": (0.8, 0.0)}}
    table = build_table("table1", [a, b], stats, spread=spread)
    assert table.rows[0][1] == "0.700±0.010 (80.0±0.0%)" and (0, 1) in table.bold
