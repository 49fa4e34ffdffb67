"""Recovery commands that error messages and docs/operations.md print, checked on real Snakemake runs.

Snakemake (9.27) does not rerun anything when a file in the middle of the DAG is deleted while
the final target exists ("Nothing to be done"), so "delete it and rerun" is no recovery: the
damaged file's job has to be forced (``snakemake --force <file>``), after which rerunning the
target reruns what depends on it (its inputs are now newer).
"""

from __future__ import annotations

import re
import shutil

import pytest

from rslib.certification.tsv import read_certificates
from workflow_helpers import TINY_TARGET, job_counts, snakemake


MODEL = "results/models/digits/gaussian/sigma0.25/seed0/model.pt"
CERTS = "results/certify/digits/gaussian/sigma0.25/seed0"
COLUMNS = ["idx", "label", "predict", "radius", "correct"]


@pytest.fixture
def damaged_run(tiny_run, tmp_path):
    """A copy (mtimes and .snakemake metadata included) of the finished tiny run to damage."""
    workdir, config, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy, config, read_certificates(workdir / CERTS / "certify.tsv")[COLUMNS]


def run(workdir, config, *args):
    return snakemake(workdir, "--cores", "2", *args, config=config)


def test_a_damaged_shard_names_file_line_field_and_a_command_that_recovers(damaged_run):
    workdir, config, original = damaged_run
    shard = workdir / CERTS / "shards/1.tsv"
    lines = shard.read_text().split("\n")
    fields = lines[3].split("\t")
    fields[3] = "abc"
    lines[3] = "\t".join(fields)
    shard.write_text("\n".join(lines))

    failed = run(workdir, config, TINY_TARGET)  # the shard is newer: the merge reruns and refuses it
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert f"error: {CERTS}/shards/1.tsv:4: field 'radius' is 'abc', expected a finite number >= 0" in output
    command = re.search(r"recover: (snakemake --force \S+) \(with your run's", output).group(1)
    assert command == f"snakemake --force {CERTS}/shards/1.tsv"

    # rerunning the target alone does nothing: the old table still exists
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(run(workdir, config, TINY_TARGET))
    assert not (workdir / CERTS / "certify.tsv").exists()

    forced = run(workdir, config, *command.split()[1:])
    assert forced.returncode == 0 and job_counts(forced) == {"certify": 1}
    redone = run(workdir, config, TINY_TARGET)
    assert redone.returncode == 0 and job_counts(redone) == {"merge_certificates": 1, "summary": 1}
    assert read_certificates(workdir / CERTS / "certify.tsv")[COLUMNS].equals(original)


def test_a_corrupt_model_is_recovered_by_forcing_its_training_job(damaged_run):
    workdir, config, original = damaged_run
    model = workdir / MODEL
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    failed = run(workdir, config, TINY_TARGET)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and f"corrupt checkpoint {MODEL}: " in output
    message = next(line for line in output.splitlines() if "corrupt checkpoint" in line)
    command = re.search(r"recover: (snakemake --force \S+) \(with your run's", message).group(1)
    assert command == f"snakemake --force {MODEL}" and len(message) < 400

    # what the old message said ("delete it and rerun") does nothing while the table exists
    deleted = workdir / "deleted"
    deleted.mkdir()
    shutil.move(model, deleted / "model.pt")
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(run(workdir, config, TINY_TARGET))

    forced = run(workdir, config, *command.split()[1:])  # training resumes its finished state
    assert forced.returncode == 0 and job_counts(forced) == {"train": 1}
    redone = run(workdir, config, TINY_TARGET)
    assert redone.returncode == 0
    assert job_counts(redone) == {"certify": 3, "merge_certificates": 1, "summary": 1}
    assert read_certificates(workdir / CERTS / "certify.tsv")[COLUMNS].equals(original)
