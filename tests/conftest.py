"""Shared fixtures: one complete local run of the tiny workflow, reused by the workflow tests
and compared against the same workflow run through SLURM."""

from __future__ import annotations

import pytest
import torch

from workflow_helpers import TINY_TARGET, snakemake, write_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Train, certify (3 shards) and summarise tests/configs/tiny.yaml locally, once. The paper's
    artefacts are built by the ensemble workflow tests (tests/test_ensemble_workflow.py)."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = write_config(workdir)
    result = snakemake(workdir, "--cores", "2", TINY_TARGET, config=config)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config, result


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: intra-op threads only spin on a busy 2-core machine, and one
    thread keeps CPU results bit-reproducible across runs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
