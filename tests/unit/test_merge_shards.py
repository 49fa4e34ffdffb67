"""rslib.certification.certify.merge_shards reads every field of every shard row as certificate_row writes it,
and refuses a damaged shard with file:line, the field, and the command that recomputes the shard
(checked on a real Snakemake run in tests/workflow/test_workflow_recovery.py)."""

from __future__ import annotations

import re

import pytest

from rslib.certification.tsv import HEADER, certificate_row
from rslib.certification.certify import merge_shards
from rslib.runtime.errors import CertificateError, RslibError

GOOD = [certificate_row(0, 3, 3, 0.4123456789, 0.25), certificate_row(5, 1, -1, 0.0, 0.5),
        certificate_row(10, 2, 7, 1.5, 0.125)]
SUBSET = [0, 5, 10]


def write(path, rows, header=HEADER):
    path.write_text(header + "".join(rows))
    return path


def test_rows_written_by_certificate_row_merge_exactly(tmp_path):
    a = write(tmp_path / "0.tsv", GOOD[:2])
    b = write(tmp_path / "1.tsv", GOOD[2:])
    merge_shards([a, b], tmp_path / "merged.tsv", SUBSET)
    assert (tmp_path / "merged.tsv").read_text() == HEADER + "".join(GOOD)


BAD_FIELDS = {
    # field index, bad value, message after "file:3: "
    "idx text": (0, "five", "field 'idx' is 'five', expected an integer >= 0"),
    "idx float": (0, "5.0", "field 'idx' is '5.0', expected an integer >= 0"),
    "idx negative": (0, "-5", "field 'idx' is '-5', expected an integer >= 0"),
    "label empty": (1, "", "field 'label' is '', expected an integer >= 0"),
    "predict below -1": (2, "-2", "field 'predict' is '-2', expected an integer >= -1"),
    "radius text": (3, "abc", "field 'radius' is 'abc', expected a finite number >= 0"),
    "radius nan": (3, "nan", "field 'radius' is 'nan', expected a finite number >= 0"),
    "radius inf": (3, "inf", "field 'radius' is 'inf', expected a finite number >= 0"),
    "radius negative": (3, "-0.5", "field 'radius' is '-0.5', expected a finite number >= 0"),
    "radius with underscore": (3, "1_0", "field 'radius' is '1_0', expected a finite number >= 0"),
    "radius of an abstention": (3, "0.3", "field 'radius' is '0.3', expected 0.0 for an abstention (predict -1)"),
    "correct not 0/1": (4, "2", "field 'correct' is '2', expected 0 (predict -1, label 1)"),
    "correct inconsistent": (4, "1", "field 'correct' is '1', expected 0 (predict -1, label 1)"),
    "time text": (5, "0:00:01.2", "field 'time' is '0:00:01.2', expected a finite number >= 0"),
    "time negative": (5, "-1.0", "field 'time' is '-1.0', expected a finite number >= 0"),
}


@pytest.mark.parametrize("field, value, message", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_bad_field_names_file_line_field_and_recovery(tmp_path, field, value, message):
    fields = GOOD[1].rstrip("\n").split("\t")  # an abstention: idx 5, label 1, predict -1
    fields[field] = value
    shard = write(tmp_path / "1.tsv", [GOOD[0], "\t".join(fields) + "\n", GOOD[2]])
    out = tmp_path / "merged.tsv"
    with pytest.raises(CertificateError) as info:
        merge_shards([shard], out, SUBSET)
    assert str(info.value) == (
        f"{shard}:3: {message}; recover: snakemake --force {shard} "
        "(with your run's --configfile/--profile/--cores options), then rerun your target"
    )
    assert isinstance(info.value, RslibError) and isinstance(info.value, ValueError)
    assert not out.exists() and list(tmp_path.iterdir()) == [shard]


def test_a_truncated_row_is_refused(tmp_path):
    shard = write(tmp_path / "0.tsv", [GOOD[0], GOOD[1][:9]])  # killed mid-line
    with pytest.raises(CertificateError, match=rf"^{shard}:3: expected 6 tab-separated fields \(idx label predict "
                                               r"radius correct time\), got 4; recover: snakemake --force "):
        merge_shards([shard], tmp_path / "merged.tsv", SUBSET)


def test_a_last_row_cut_before_its_newline_is_refused(tmp_path):
    """A shard that lost its final bytes: time '0.125000' left as '0.' reads as a number, but the
    row lacks the newline certificate_row ends every row with."""
    shard = write(tmp_path / "0.tsv", [GOOD[0], GOOD[1], GOOD[2][: GOOD[2].index("\t0.125000") + 3]])
    out = tmp_path / "merged.tsv"
    with pytest.raises(CertificateError) as info:
        merge_shards([shard], out, SUBSET)
    assert str(info.value) == (
        f"{shard}:4: incomplete row: no newline after field 'time' ('0.'), expected every row to end with one "
        f"(the file was cut inside this row); recover: snakemake --force {shard} "
        "(with your run's --configfile/--profile/--cores options), then rerun your target"
    )
    assert not out.exists()


def test_labels_and_predictions_are_bounded_by_the_classes_where_known(tmp_path):
    shard = write(tmp_path / "0.tsv", GOOD)  # image 10: label 2, predict 7
    merge_shards([shard], tmp_path / "merged.tsv", SUBSET, classes=8)
    with pytest.raises(CertificateError, match=re.escape(
            f"{shard}:4: field 'predict' is '7', expected -1 (abstain) or an integer in [0, 5) (digits has 5 classes); "
            f"recover: snakemake --force {shard} ")):
        merge_shards([shard], tmp_path / "merged5.tsv", SUBSET, classes=5, dataset="digits")
    assert not (tmp_path / "merged5.tsv").exists()


def test_an_empty_or_binary_shard_is_refused(tmp_path):
    empty = write(tmp_path / "0.tsv", [], header="")
    with pytest.raises(CertificateError, match=rf"^{empty}:1: bad header ''"):
        merge_shards([empty], tmp_path / "merged.tsv", SUBSET)
    binary = tmp_path / "1.tsv"
    binary.write_bytes(HEADER.encode() + b"\xff\xfe\x00garbage\n")
    with pytest.raises(CertificateError, match=rf"^{binary}: not a text file"):
        merge_shards([binary], tmp_path / "merged.tsv", SUBSET)
    with pytest.raises(CertificateError, match=rf"^cannot read shard {tmp_path / 'missing.tsv'}"):
        merge_shards([tmp_path / "missing.tsv"], tmp_path / "merged.tsv", SUBSET)


def test_a_wrong_image_names_where_it_is(tmp_path):
    a = write(tmp_path / "0.tsv", GOOD[:1])
    b = write(tmp_path / "1.tsv", [GOOD[2]])  # image 5 is missing
    with pytest.raises(CertificateError) as info:
        merge_shards([a, b], tmp_path / "merged.tsv", SUBSET)
    assert f"{b}:2 has image 10 where the subset has image 5; rerun the certify shards: snakemake --force {b} " in str(
        info.value
    )
