"""Tests for rslib.report.summaries: ACR, certified accuracy, LaTeX tables and the summary outputs."""

from __future__ import annotations

import math
import os
import re

import pandas as pd
import pytest

from rslib.report.metrics import average_certified_radius, certified_accuracy, summarize
from rslib.report.latex import best_in_columns, latex_escape, latex_table
from rslib.certification.published_logs import import_certification_log
from rslib.certification.tsv import parse_seconds
from rslib.certification.tsv import read_certificates
from rslib.report.summaries import write_summary
from rslib.certification.tsv import COLUMNS, HEADER, certificate_row
from rslib.runtime.errors import CertificateLogError
from latex_helpers import check_tex_artefact, require_pdflatex

# A hand-written certification TSV (Cohen et al.'s layout). Six images:
#   0: correct, r = 0.5          3: WRONG prediction with r = 2.0 (must not count)
#   1: correct, r = 1.25         4: correct, r = 0.75
#   2: abstain (-1), r = 0       5: correct, r = 0.25
HAND_TSV = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t3\t3\t0.5\t1\t0.2\n"
    "1\t1\t1\t1.25\t1\t0.3\n"
    "2\t2\t-1\t0.0\t0\t0.1\n"
    "3\t4\t7\t2.0\t0\t0.2\n"
    "4\t0\t0\t0.75\t1\t0.1\n"
    "5\t9\t9\t0.25\t1\t0.1\n"
)
HAND_ACR = (0.5 + 1.25 + 0.75 + 0.25) / 6
HAND_CERTIFIED = {0.0: 4 / 6, 0.25: 4 / 6, 0.5: 3 / 6, 0.75: 2 / 6, 1.0: 1 / 6, 1.25: 1 / 6, 1.5: 0.0, 2.0: 0.0}


@pytest.fixture
def hand_df(tmp_path):
    path = tmp_path / "cert.tsv"
    path.write_text(HAND_TSV)
    return read_certificates(path)


# --- metrics ------------------------------------------------------------------------------------


def test_columns_match_the_certify_header():
    assert HEADER == "\t".join(COLUMNS) + "\n" == HAND_TSV.splitlines(keepends=True)[0]


def test_average_certified_radius_by_hand(hand_df):
    assert average_certified_radius(hand_df) == pytest.approx(HAND_ACR, rel=1e-12)
    # counting the wrong prediction's radius would give a larger value
    assert average_certified_radius(hand_df) < (2.75 + 2.0) / 6


@pytest.mark.parametrize("radius, expected", sorted(HAND_CERTIFIED.items()))
def test_certified_accuracy_by_hand(hand_df, radius, expected):
    assert certified_accuracy(hand_df, radius) == pytest.approx(expected, rel=1e-12)


def test_certified_accuracy_is_inclusive_at_the_radius(hand_df):
    # radius exactly equal to r counts (>=), just above does not
    assert certified_accuracy(hand_df, 1.25) == pytest.approx(1 / 6)
    assert certified_accuracy(hand_df, math.nextafter(1.25, 2.0)) == 0.0


def test_summarize_by_hand(hand_df):
    out = summarize(hand_df, [0.25, 0.5, 1.0, 1.5])
    assert set(out) == {"images", "acr", "accuracy", "r=0.25", "r=0.5", "r=1", "r=1.5"}
    assert out["images"] == 6
    assert out["acr"] == pytest.approx(HAND_ACR)
    assert out["accuracy"] == pytest.approx(4 / 6)  # abstention and wrong prediction are errors
    for r in (0.25, 0.5, 1.0, 1.5):
        assert out[f"r={r:g}"] == pytest.approx(HAND_CERTIFIED[r])


@pytest.mark.parametrize(
    "header",
    [
        "idx\tlabel\tpredict\tradius\tcorrect\n",  # no time column
        "idx\tlabel\tpredict\tcorrect\tradius\ttime\n",  # swapped columns
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\textra\n",  # an extra column
        "idx,label,predict,radius,correct,time\n",  # not tab-separated
    ],
    ids=["missing", "order", "extra", "csv"],
)
def test_read_certificates_rejects_wrong_columns(tmp_path, header):
    n = header.count("\t") + 1 if "\t" in header else 6
    sep = "\t" if "\t" in header else ","
    path = tmp_path / "bad.tsv"
    path.write_text(header + sep.join(["1"] * n) + "\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_certificates(path)


# --- published certification logs -------------------------------------------------------------

# A fabricated log in the reference repositories' layout (Cohen et al.'s certify.py: radius '{:.3}',
# time str(timedelta); some files hold plain seconds): every row ends with its newline.
LOG_ROWS = [
    "0\t3\t3\t0.412\t1\t0:00:14.250000\n",  # h:mm:ss.ffffff
    "1\t8\t8\t1.07\t1\t0:00:02\n",  # h:mm:ss
    "2\t5\t-1\t0.0\t0\t1.5\n",  # abstention, seconds
    "3\t0\t6\t0.233\t0\t1 day, 0:00:01\n",  # a wrong prediction keeps its radius; a day-long timedelta
]


def write_log(path, rows=LOG_ROWS, header=HEADER):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(rows))
    return path


def files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def import_log(log, out, indices=(0, 1, 2, 3), dataset="cifar10", sigma=0.25):
    return import_certification_log(log, list(indices), out, dataset=dataset, sigma=sigma)


def test_parse_seconds_reads_seconds_and_timedelta_text():
    assert [parse_seconds(t) for t in ["0:00:14.250000", "0:00:02", "1.5", "1 day, 0:00:01", "2 days, 1:02:03.5"]] == [
        14.25, 2.0, 1.5, 86401.0, 2 * 86400 + 3723.5]
    for bad in ["nan", "inf", "-1", "1_0", " ", "0:00:1", "0:61:00", "1:02", "-1 day, 23:59:59"]:
        with pytest.raises(ValueError, match="is neither seconds nor h:mm:ss"):
            parse_seconds(bad)


@pytest.mark.parametrize("folder, sigma", [("noise_0.25/test/sigma_0.25", 0.25), ("smoothmix/noise_0.5", 0.50),
                                           ("cifar_resnet110/noise_0.50", 0.5), ("consistency_noise_1.00", 0.25)],
                         ids=["salman-layout", "noise_0.5-at-0.50", "noise_0.50-at-0.5", "not-a-component"])
def test_a_good_log_is_imported_on_the_evaluation_images(tmp_path, folder, sigma):
    """Times as h:mm:ss.ffffff, h:mm:ss and seconds; σ markers are whole path components
    compared numerically (a name that merely contains noise_1.00 is no marker)."""
    log = write_log(tmp_path / "released" / folder)
    out = tmp_path / "certify.tsv"
    record = import_log(log, out, indices=[1, 2, 3], sigma=sigma)
    assert out.read_text() == HEADER + certificate_row(1, 8, 8, 1.07, 2.0) + certificate_row(2, 5, -1, 0.0, 1.5) \
        + certificate_row(3, 0, 6, 0.233, 86401.0)
    assert read_certificates(out)["time"].tolist() == [2.0, 1.5, 86401.0]
    assert (record["rows"], record["rows_in_source"], record["dataset"], record["num_classes"], record["sigma"]) == (
        3, 4, "cifar10", 10, sigma)


def test_the_class_bound_comes_from_the_dataset_registry(tmp_path):
    log = write_log(tmp_path / "noise_0.25", LOG_ROWS[:3] + ["3\t999\t999\t0.5\t1\t0:00:30.000001\n"])
    import_log(log, tmp_path / "ok.tsv", dataset="imagenet")  # 1000 classes
    with pytest.raises(CertificateLogError, match=re.escape(
            f"published log {log}:5: field 'label' is '999', expected an integer in [0, 10) (cifar10 has 10 classes)")):
        import_log(log, tmp_path / "bad.tsv", dataset="cifar10")
    assert not (tmp_path / "bad.tsv").exists()


def cut(rows, k, new):
    return rows[:k] + [new] + rows[k + 1:]


BAD_LOGS = {
    # rows, the message after "published log <file>"
    "row cut mid-line": (cut(LOG_ROWS, 1, "1\t8\n"),
                         ":3: expected 6 tab-separated fields (idx label predict radius correct time), got 2"),
    "last line cut inside the radius": (cut(LOG_ROWS, 3, "3\t0\t6\t0.2"),  # 0.233 read as 0.2 before
                                        ":5: expected 6 tab-separated fields (idx label predict radius correct time), "
                                        "got 4"),
    "last line cut inside the time": (cut(LOG_ROWS, 3, "3\t0\t6\t0.233\t0\t0:00:14.1"),
                                      ":5: incomplete row: no newline after field 'time' ('0:00:14.1'), expected every "
                                      "row to end with one (the file was cut inside this row)"),
    "last line without its newline": (cut(LOG_ROWS, 3, LOG_ROWS[3].rstrip("\n")),
                                      ":5: incomplete row: no newline after field 'time' ('1 day, 0:00:01'), expected "
                                      "every row to end with one (the file was cut inside this row)"),
    "correct where predict != label": (cut(LOG_ROWS, 3, "3\t0\t6\t0.233\t1\t0:00:02\n"),
                                       ":5: field 'correct' is '1', expected 0 (predict 6, label 0)"),
    "negative radius": (cut(LOG_ROWS, 1, "1\t8\t8\t-1.07\t1\t0:00:02\n"),
                        ":3: field 'radius' is '-1.07', expected a finite number >= 0"),
    "radius of an abstention": (cut(LOG_ROWS, 2, "2\t5\t-1\t0.5\t0\t1.5\n"),
                                ":4: field 'radius' is '0.5', expected 0.0 for an abstention (predict -1)"),
    "label beyond the classes": (cut(LOG_ROWS, 0, "0\t12\t12\t0.412\t1\t0:00:14.250000\n"),
                                 ":2: field 'label' is '12', expected an integer in [0, 10) (cifar10 has 10 classes)"),
    "predict beyond the classes": (cut(LOG_ROWS, 0, "0\t3\t10\t0.412\t0\t0:00:14.250000\n"),
                                   ":2: field 'predict' is '10', expected -1 (abstain) or an integer in [0, 10) "
                                   "(cifar10 has 10 classes)"),
    "time not a time": (cut(LOG_ROWS, 2, "2\t5\t-1\t0.0\t0\tnan\n"),
                        ":4: field 'time' is 'nan', expected seconds >= 0 or h:mm:ss[.ffffff]"),
    "image twice": (LOG_ROWS + [LOG_ROWS[1]], ":6: image 1 appears twice (first on line 3), expected each image once"),
    "skip-20 log": ([LOG_ROWS[0]], " lacks 3 of the 4 evaluation images (first missing: [1, 2, 3]); it must cover "
                                   "the configured evaluation subset"),
    "header only": ([], " lacks 4 of the 4 evaluation images (first missing: [0, 1, 2, 3]); it must cover the "
                        "configured evaluation subset"),
}


@pytest.mark.parametrize("rows, message", BAD_LOGS.values(), ids=BAD_LOGS.keys())
def test_a_broken_or_foreign_log_is_refused_in_one_line_and_nothing_is_written(tmp_path, rows, message):
    log = write_log(tmp_path / "noise_0.25" / "test" / "sigma_0.25", rows)
    with pytest.raises(CertificateLogError) as info:
        import_log(log, tmp_path / "out" / "certify.tsv")
    assert str(info.value) == f"published log {log}{message}"
    assert files(tmp_path) == [log]  # nothing written, no temporary file left


def test_curve_file_header_is_not_a_log(tmp_path):
    log = write_log(tmp_path / "noise_0.25_acc", ["0.00500\t0.77710\n"], header="0.00000\t0.77840\n")
    with pytest.raises(CertificateLogError, match=re.escape(f"published log {log}:1: bad header '0.00000\\t0.77840'")):
        import_log(log, tmp_path / "out.tsv")


@pytest.mark.parametrize("path, sigma, message", [
    ("noise_1.00/test/sigma_1.00", 0.25, "its folder 'noise_1.00' says sigma=1, expected sigma=0.25"),
    ("noise_0.25/test/sigma_0.50", 0.25, "its file name 'sigma_0.50' says sigma=0.5, expected sigma=0.25"),
    ("smoothmix/noise_0.5", 1.0, "its file name 'noise_0.5' says sigma=0.5, expected sigma=1"),
], ids=["noise_1.00-folder-at-0.25", "sigma_0.50-file-at-0.25", "noise_0.5-file-at-1.00"])
def test_a_log_of_another_sigma_is_refused_by_its_path(tmp_path, path, sigma, message):
    log = write_log(tmp_path / path)
    with pytest.raises(CertificateLogError) as info:
        import_log(log, tmp_path / "out.tsv", sigma=sigma)
    assert str(info.value) == (f"published log {log}: {message} (the slot it is configured for): configure it under "
                               f"its own sigma, or give the sigma={sigma:g} log")
    assert files(tmp_path) == [log]


def test_an_empty_file_or_a_folder_is_refused(tmp_path):
    empty = write_log(tmp_path / "empty", [], header="")
    with pytest.raises(CertificateLogError, match=re.escape(f"published log {empty}:1: bad header '', expected")):
        import_log(empty, tmp_path / "out.tsv")
    folder = re.escape(f"published log {tmp_path}: cannot read it (Is a directory)")
    with pytest.raises(CertificateLogError, match=f"^{folder}$"):
        import_log(tmp_path, tmp_path / "out.tsv")
    assert files(tmp_path) == [empty]


# --- LaTeX --------------------------------------------------------------------------------------


def test_latex_escape():
    assert latex_escape("a_b") == r"a\_b"
    assert latex_escape("50%") == r"50\%"
    assert latex_escape("x & y") == r"x \& y"
    assert latex_escape("#1") == r"\#1"
    assert latex_escape(r"C:\tmp") == r"C:\textbackslash{}tmp"
    assert latex_escape("σ=0.25") == r"$\sigma$=0.25"
    assert latex_escape("3×") == r"3$\times$"


def test_latex_table_structure_escaping_and_bold():
    header = ["Method", "σ", "Acc_%"]
    rows = [["adv_macer & co", "0.25", "50%"], ["gaussian", "0.50", "7"]]
    text = latex_table(header, rows, caption="best_in & 5%", bold={(0, 2), (1, 0)})
    lines = text.splitlines()
    assert r"\documentclass[varwidth=\maxdimen]{standalone}" in lines and r"\usepackage{booktabs}" in lines
    # the preamble only when compiled alone: skipped when \input into a document body
    assert lines.index(r"\begin{document}") < lines.index(r"\fi") < lines.index(r"\begin{tabular}{lll}")
    assert r"\begin{tabular}{lll}" in lines  # default alignment: one l per column
    i_top, i_mid, i_bot = lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")
    assert i_top < i_mid < i_bot
    assert lines[i_top + 1] == r"Method & $\sigma$ & Acc\_\% \\"
    body = lines[i_mid + 1 : i_bot]
    assert body == [
        r"adv\_macer \& co & 0.25 & \textbf{50\%} \\",
        r"\textbf{gaussian} & 0.50 & 7 \\",
    ]
    assert lines[0] == r"% best\_in \& 5\%"  # caption as an escaped comment
    # no unescaped special characters anywhere in the table body
    for line in [lines[i_top + 1], *body]:
        assert not re.search(r"(?<!\\)[_%]", line)
        assert len(re.findall(r"(?<!\\)&", line)) == 2  # only the column separators
    assert text.count(r"\textbf") == 2
    assert lines[-1] == r"\csname rstableend\endcsname"  # \end{document} only when compiled alone
    assert text.isascii()


def test_latex_table_custom_alignment():
    text = latex_table(["a", "b"], [["1", "2"]], caption="c", align="lr")
    assert r"\begin{tabular}{lr}" in text.splitlines()


def test_best_in_columns_marks_all_ties():
    values = [[1.0, 2.0, 0.1], [3.0, 2.0, 0.3], [3.0, 1.0, 0.2]]
    assert best_in_columns(values, [0, 1]) == {(1, 0), (2, 0), (0, 1), (1, 1)}
    assert best_in_columns(values, [2]) == {(1, 2)}
    assert best_in_columns(values, []) == set()


def test_latex_escape_gives_ascii_for_pdflatex():
    """No raw Unicode reaches a .tex file: pdflatex's OT1 defaults have no glyphs for it."""
    assert latex_escape("ε=0.5, α, ω; Φ") == r"$\epsilon$=0.5, $\alpha$, $\omega$; $\Phi$"
    assert latex_escape("ours − paper ± 1") == "ours $-$ paper $\\pm$ 1"
    assert latex_escape("– — …") == r"-- --- \ldots{}"
    assert latex_escape("a † b ‡ § c") == r"a $^\dagger$ b $^\ddagger$ \S{} c"
    assert latex_escape("r ≥ 0.5, a<b|c>d") == r"r $\geq$ 0.5, a$<$b$|$c$>$d"  # OT1 prints < | > as ¡ — ¿
    assert latex_escape("Café™ ½ 😀") == "CafeTM 1[U+2044]2 [U+1F600]"  # never fails, never raw
    assert latex_escape("".join(map(chr, range(0x3B1, 0x3CA)))).isascii()  # every small Greek letter


def test_latex_table_compiles_alone_and_input_into_a_booktabs_document(tmp_path):
    require_pdflatex()
    text = latex_table(["Method", "σ", "Acc_%", "Ours − paper"],
                       [["a_b & c", "0.25", "50%", "–"], ["EsbRS×3 ‡", "ε", "1±2", "x<y|z>w … é"]],
                       caption="x_y σ − † §", bold={(0, 0), (1, 1)})
    (tmp_path / "t_1.tex").write_text(text)
    check_tex_artefact(tmp_path / "t_1.tex", tmp_path / "latex")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latex", "t_1.tex"]  # pdflatex wrote elsewhere


# --- write_summary --------------------------------------------------------------------------------


def _tsv(rows: list[tuple[int, int, float]]) -> str:
    """rows of (label, predict, radius) -> TSV text"""
    lines = [HEADER]
    for i, (label, predict, radius) in enumerate(rows):
        lines.append(f"{i}\t{label}\t{predict}\t{radius!r}\t{int(label == predict)}\t0.1\n")
    return "".join(lines)


def _expected(rows: list[tuple[int, int, float]], radii) -> dict[str, float]:
    """Metrics recomputed by plain loops from the rows."""
    n = len(rows)
    good = [r for label, predict, r in rows if label == predict]
    out = {"images": n, "acr": sum(good) / n, "accuracy": len(good) / n}
    for radius in radii:
        out[f"r={radius:g}"] = sum(r >= radius for r in good) / n
    return out


def test_write_summary(tmp_path):
    data = {
        "a": [(0, 0, 0.9), (1, 1, 0.3), (2, -1, 0.0), (3, 5, 1.7), (4, 4, 1.2)],  # cifar10 gaussian
        "b": [(0, 0, 1.1), (1, 1, 0.45), (2, 2, 0.2), (3, -1, 0.0), (4, 1, 0.4)],  # cifar10 macer
        "c": [(0, 0, 0.1), (1, 0, 0.8), (2, 2, 0.55), (3, 3, 0.05)],  # svhn, alone in its group
    }
    models = [
        {"dataset": "cifar10", "method": "gaussian", "sigma": 0.25, "seed": 0},
        {"dataset": "cifar10", "method": "adv_macer", "sigma": 0.25, "seed": 0},
        {"dataset": "svhn", "method": "gaussian", "sigma": 0.5, "seed": 1},
    ]
    paths = []
    for name, rows in data.items():
        p = tmp_path / "certify" / f"{name}.tsv"
        p.parent.mkdir(exist_ok=True)
        p.write_text(_tsv(rows))
        paths.append(p)
    radii = [0.0, 0.5, 1.0]
    out = tmp_path / "out"
    summary = write_summary(
        models=models, certificates=paths, radii=radii, max_radius=2.0,
        table=out / "table.tex", csv=out / "summary.csv", figure=out / "curves.pdf",
    )
    assert sorted(os.listdir(out)) == ["curves.pdf", "summary.csv", "table.tex"]  # no temporaries
    assert (out / "curves.pdf").read_bytes().startswith(b"%PDF")

    csv = pd.read_csv(out / "summary.csv")
    assert list(csv.columns) == ["dataset", "method", "sigma", "seed", "images", "acr", "accuracy", "r=0", "r=0.5", "r=1"]
    assert len(csv) == 3
    for i, (rows, meta) in enumerate(zip(data.values(), models)):
        assert csv.loc[i, "dataset"] == meta["dataset"] and csv.loc[i, "method"] == meta["method"]
        assert csv.loc[i, "sigma"] == meta["sigma"] and csv.loc[i, "seed"] == meta["seed"]
        for key, value in _expected(rows, radii).items():
            assert csv.loc[i, key] == pytest.approx(value, rel=1e-12, abs=1e-15), (i, key)
            assert summary.loc[i, key] == pytest.approx(value, rel=1e-12, abs=1e-15), (i, key)

    tex = (out / "table.tex").read_text().splitlines()
    body = tex[tex.index(r"\midrule") + 1 : tex.index(r"\bottomrule")]
    cells = [line.removesuffix(r" \\").split(" & ") for line in body]
    assert [c[:4] for c in cells] == [
        ["cifar10", "gaussian", "0.25", "0"],
        ["cifar10", r"adv\_macer", "0.25", "0"],
        ["svhn", "gaussian", "0.50", "1"],
    ]
    ea, eb, ec = (_expected(rows, radii) for rows in data.values())
    # hand check of the cifar10 group: a: ACR 2.4/5, certified 60/40/20 %; b: ACR 1.75/5, 60/20/20 %
    assert cells[0][4:] == [r"\textbf{0.480}", r"\textbf{60.0}", r"\textbf{40.0}", r"\textbf{20.0}"]
    assert (ea["acr"], eb["acr"]) == (pytest.approx(0.48), pytest.approx(0.35))
    assert cells[1][4:] == ["0.350", r"\textbf{60.0}", "20.0", r"\textbf{20.0}"]
    # svhn is alone in its (dataset, sigma) group: all its numbers are the best
    assert cells[2][4:] == [rf"\textbf{{{ec['acr']:.3f}}}", *[rf"\textbf{{{100 * ec[f'r={r:g}']:.1f}}}" for r in radii]]
    # metadata cells are never bold
    assert not any(r"\textbf" in c for row in cells for c in row[:4])
    header = tex[tex.index(r"\toprule") + 1]
    assert header == r"Dataset & Method & $\sigma$ & Seed & ACR & 0 & 0.5 & 1 \\"


def test_latex_escape_covers_every_special_character():
    assert latex_escape("a$b{c}^d~e") == r"a\$b\{c\}\textasciicircum{}d\textasciitilde{}e"
    assert latex_escape("\\") == r"\textbackslash{}"
