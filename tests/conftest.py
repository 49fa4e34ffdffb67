"""Shared fixtures: one complete local run of the tiny workflow, reused by the workflow tests
and compared against the same workflow run through SLURM."""

from __future__ import annotations

import pytest

from workflow_helpers import snakemake, write_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The complete workflow on tests/configs/tiny.yaml, run locally once."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = write_config(workdir)
    result = snakemake(workdir, "--cores", "2", "all", config=config)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config, result
