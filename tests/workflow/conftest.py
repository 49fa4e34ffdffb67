"""One complete local run of the tiny workflow, reused by the workflow tests and compared against
the same workflow run through SLURM."""

from __future__ import annotations

import pytest

from workflow_helpers import TINY_TARGET, snakemake, write_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Train, certify (3 shards) and summarise tests/configs/tiny.yaml locally, once. The paper's
    artefacts are built by the ensemble workflow tests (tests/workflow/test_ensemble_workflow.py)."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = write_config(workdir)
    result = snakemake(workdir, "--cores", "2", TINY_TARGET, config=config)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config, result
