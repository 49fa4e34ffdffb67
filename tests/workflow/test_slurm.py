"""The tiny workflow through a real one-node SLURM cluster (Debian slurm-wlm + munge, two fake
GPUs declared as gres on character devices), with the repository's `slurm` profile used exactly
as users do: `snakemake --profile slurm ...` from the repository root.

Checks that the GPU jobs really went through sbatch with a GPU request (their provenance
records SLURM_JOB_ID and the CUDA_VISIBLE_DEVICES that SLURM set for --gpus=1) and that the
table equals the one of a local run of the same configuration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from workflow_helpers import REPO, TINY_TARGET, job_counts, snakemake, write_config

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "tests/slurm/cluster.sh"


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("sbatch") is None or os.geteuid() != 0:
        reason = "SLURM test needs root and Debian's slurm-wlm + munge (`make test` installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    started = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    exports = subprocess.run(["bash", str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for line in exports.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            env[key] = value.strip("'\"")
    return env


def test_workflow_runs_through_sbatch_and_matches_local_run(cluster, tiny_run, tmp_path, monkeypatch):
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    workdir = tmp_path / "slurm-run"
    workdir.mkdir()
    config = write_config(workdir)
    result = snakemake(
        workdir, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2", TINY_TARGET,
        config=config, cwd=REPO, timeout=1200,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    output = result.stdout + result.stderr
    assert job_counts(result) == {"prepare_data": 1, "train": 1, "certify": 3, "merge_certificates": 1,
                                  "summary": 1}

    # every GPU job ran inside a SLURM allocation with a GPU assigned
    model_dir = workdir / "results/certify/digits/gaussian/sigma0.25/seed0"
    record = json.loads((model_dir / "certify.json").read_text())
    job_ids = {record["model"]["provenance"]["slurm_job_id"]}
    for shard in record["shards"]:
        assert shard["cuda_visible_devices"] != "", shard
        job_ids.add(shard["slurm_job_id"])
    assert record["model"]["provenance"]["cuda_visible_devices"] != ""
    assert len(job_ids) == 4  # one train job and three certify jobs, each its own sbatch submission
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    assert submitted == job_ids, output[-4000:]

    # the same table as the local run of the same configuration
    local_dir, _, _ = tiny_run
    for name in ("certified_accuracy.tex", "certified_accuracy.csv"):
        assert (workdir / "results" / name).read_text() == (local_dir / "results" / name).read_text()
