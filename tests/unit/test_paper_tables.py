"""The paper's tables (rslib.report.tables) and the paper-vs-reproduced comparison (rslib.report.comparison):
which sources each artefact needs, and that every cell is the statistic of its certificate TSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rslib.report.metrics import average_certified_radius, certified_accuracy
from rslib.certification.tsv import read_certificates
from rslib.certification.tsv import HEADER
from rslib.report.comparison import compare
from rslib.experiment.artefacts import Configured, Source, table_sources
from rslib.report.figures import write_figure
from rslib.report.tables import write_table

PAPER = {"main": "cifar10", "svhn": "svhn", "imagenet": None, "table3_sigma": "0.25",
         "figure1_sigma": "1.00", "figure3_sigma": "0.50"}


def configured(sigmas=("0.25", "0.50")) -> Configured:
    first = {("cifar10", s, m): 0 for s in sigmas for m in ("smoothadv", "macer", "advmacer", "consistency")}
    ensembles = {("cifar10", s, e, "average") for s in sigmas for e in ("advmacer:3", "advmacer:1+smoothadv:2")}
    ensembles |= {("cifar10", "0.25", "advmacer:2", scheme) for scheme in ("average", "mme", "optimal-paper")}
    return Configured(first, ensembles, {"cifar10": list(sigmas)})


def test_sources_follow_the_paper_and_the_configuration():
    t1 = table_sources("table1", PAPER, configured())
    # smoothmix is not configured here: its row is left out, never invented
    assert [s.label for s in t1 if s.sigma == "0.25"] == [
        "SmoothAdv", "MACER", "Consistency", "AdvMacer", "EsbRS-AdvMacer×3", "EsbRS-AdvMacer×1+SmoothAdv×2"]
    assert {s.sigma for s in t1} == {"0.25", "0.50"}
    assert [s.scheme for s in table_sources("table3", PAPER, configured())] == [None, "average", "mme", "optimal-paper"]
    assert table_sources("table4", PAPER, configured()) == []  # imagenet: None → skipped
    assert table_sources("table7", PAPER, configured()) == []  # σ = 1.00 not configured
    assert [s.name for s in table_sources("figure3", PAPER, configured())] == [
        "advmacer", "advmacer:3", "advmacer:1+smoothadv:2"]
    with pytest.raises(ValueError, match="unknown artefact"):
        table_sources("table9", PAPER, configured())


def fake_certificate(path, seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.7
    radius = np.where(correct, rng.random(n) * 1.5, 0.0)
    lines = [f"{i}\t{i % 10}\t{i % 10 if c else -1}\t{float(r)!r}\t{int(c)}\t{0.01 * (seed + 1):.6f}"
             for i, (c, r) in enumerate(zip(correct, radius))]
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return str(path)


def test_table_cells_are_the_statistics_of_their_certificates(tmp_path):
    sources = table_sources("table5", PAPER, configured())
    paths = [fake_certificate(tmp_path / f"{k}.tsv", k) for k, _ in enumerate(sources)]
    singles = [s for s in sources if s.single]
    curves = []
    for k, _ in enumerate(singles):
        curve = tmp_path / f"curve{k}.csv"
        pd.DataFrame({"epoch": [1, 2], "train_seconds": [1800.0, 3600.0 * (k + 1)], "acr": [0.1, 0.2],
                      "accuracy": [0.5, 0.6], "images": [10, 10]}).to_csv(curve, index=False)
        curves.append(str(curve))
    table = write_table("table5", sources, paths, curves, [{}] * len(sources), [], [], "cifar10",
                        str(tmp_path / "t.tex"), str(tmp_path / "t.csv"))
    records = pd.read_csv(tmp_path / "t.csv")
    for src, path in zip(sources, paths):
        df = read_certificates(path)
        mine = records[records["row"] == src.label].set_index("metric")["value"]
        assert mine["acr"] == pytest.approx(average_certified_radius(df))
        assert mine["r=0.5"] == pytest.approx(certified_accuracy(df, 0.5))
    # the best ACR of the column is bold
    acr = [float(r[-1]) for r in table.rows]
    assert (int(np.argmax(acr)), len(table.header) - 1) in table.bold
    tex = (tmp_path / "t.tex").read_text()
    assert "\\documentclass" in tex and "\\toprule" in tex and "EsbRS-AdvMacer$\\times$3" in tex


def test_table3_times_include_the_members(tmp_path):
    sources = table_sources("table3", PAPER, configured())
    paths = [fake_certificate(tmp_path / f"{k}.tsv", k) for k, _ in enumerate(sources)]
    curve = tmp_path / "c.csv"
    pd.DataFrame({"epoch": [1], "train_seconds": [60.0], "acr": [0.1], "accuracy": [0.5], "images": [1]}).to_csv(curve)
    members = [Source("cifar10", "0.25", "advmacer", None, 0), Source("cifar10", "0.25", "advmacer", None, 3)]
    member_paths = [paths[0], fake_certificate(tmp_path / "seed3.tsv", 9)]
    write_table("table3", sources, paths, [str(curve)], [{}] * len(sources), members, member_paths, "cifar10",
                str(tmp_path / "t.tex"), str(tmp_path / "t.csv"))
    seconds = pd.read_csv(tmp_path / "t.csv").query("metric == 'certify_seconds'").set_index("row")["value"]
    # single: 0.01 s/image; each 2-ensemble: its own reduction time + both members' (0.01 s and 0.1 s)
    assert seconds["AdvMacer"] == pytest.approx(0.01)
    assert seconds["average"] == pytest.approx(0.02 + 0.01 + 0.1)
    assert seconds["mme"] == pytest.approx(0.03 + 0.01 + 0.1)


def test_figure3_groups_ensemble_sizes(tmp_path):
    sources = [Source("cifar10", "0.50", "advmacer"), Source("cifar10", "0.50", "advmacer:2", "average"),
               Source("cifar10", "0.50", "advmacer:1+smoothadv:2", "average")]
    paths = [fake_certificate(tmp_path / f"{k}.tsv", k) for k in range(3)]
    write_figure("figure3", sources, paths, [], "0.50", str(tmp_path / "f.pdf"), str(tmp_path / "f.csv"))
    points = pd.read_csv(tmp_path / "f.csv")
    single = average_certified_radius(read_certificates(paths[0]))
    assert sorted(points["components"]) == [1, 1, 2, 3]
    assert points[points["components"] == 1]["acr"].tolist() == pytest.approx([single, single])
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")


def test_comparison_joins_paper_and_ours_cell_by_cell(tmp_path):
    reported = tmp_path / "reported.csv"
    reported.write_text("table,sigma,row,metric,value,source_line\n"
                        "table1,0.25,AdvMacer,acr,0.554,195\ntable1,0.50,AdvMacer,acr,0.742,195\n"
                        "table8,0.25,MACER,acr,0.549,343\n")
    ours = tmp_path / "table1.csv"
    ours.write_text("table,sigma,row,metric,value\ntable1,0.25,AdvMacer,acr,0.5\ntable1,0.25,AdvMacer,accuracy,0.7\n")
    table = compare(reported, [ours])
    assert len(table) == 1  # only cells both report
    row = table.iloc[0]
    assert (row["paper"], row["ours"], row["source_line"]) == (0.554, 0.5, 195)
    assert row["difference"] == pytest.approx(-0.054)


def test_transcribed_paper_numbers_are_well_formed():
    from workflow_helpers import REPO

    paper = pd.read_csv(REPO / "paper/reported.csv", dtype={"sigma": str})
    assert list(paper.columns) == ["table", "sigma", "row", "metric", "value", "source_line"]
    assert set(paper["table"]) == {f"table{k}" for k in range(1, 9)}
    assert not paper.duplicated(["table", "sigma", "row", "metric"]).any()
    fractions = paper[paper["metric"].isin(["acr", "accuracy"]) | paper["metric"].str.startswith("r=")]
    assert fractions["value"].between(0, 1.5).all()


def test_origins_are_marked_per_row_or_per_cell():
    """A row of one origin is marked on its label; a row mixing origins (SmoothMix from published
    logs at σ 0.25 and trained at σ 1.00, as in presets/cifar10-published.yaml) on each cell."""
    from rslib.experiment.artefacts import Source
    from rslib.report.tables import build_table

    stats = {"acr": 0.5, "accuracy": 0.8}
    sources = [Source("cifar10", "0.25", "smoothadv", origin="imported"),
               Source("cifar10", "1.00", "smoothadv", origin="imported"),
               Source("cifar10", "0.25", "smoothmix", origin="published log"),
               Source("cifar10", "1.00", "smoothmix")]
    table = build_table("table1", sources, {s: stats for s in sources})
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["SmoothAdv ‡"] == ["0.500 (80.0%)", "0.500 (80.0%)"]
    assert rows["SmoothMix"] == ["0.500 (80.0%) §", "0.500 (80.0%)"]
    assert "‡ released checkpoint" in table.caption and "§ published certification log" in table.caption
    origins = {(r["row"], r["sigma"]): r["origin"] for r in table.records}
    assert origins[("SmoothMix", "0.25")] == "published log" and origins[("SmoothMix", "1.00")] == "trained"
