"""benchmarks/device_check.py at its smoke size: the GPU check must run (here on the CPU) so
that it has not rotted when a GPU machine is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECKS = ["train_steps", "sigterm_resume", "prototype_models", "certify_fp32_bf16", "stored_vs_direct",
          "certify_adaptive", "checkpoint_to_cpu", "torchscript_model", "exported_model",
          "oom_backoff", "certify_speed", "train_speed"]


def test_device_check_smoke_runs_every_check_and_writes_its_table(tmp_path):
    # "cpu:0", a device named with an index: tensors made on "cuda" report "cuda:0", and code
    # that compares devices by equality breaks on a GPU only (it once did)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/device_check.py"), "--smoke", "--device", "cpu:0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "device_check.json").read_text())
    assert record["mode"] == "smoke" and record["failed"] == []
    statuses = {c["name"]: c["status"] for c in record["checks"]}
    assert list(statuses) == CHECKS
    assert set(statuses.values()) == {"pass"}, statuses
    figures = {c["name"]: c["figures"] for c in record["checks"]}
    assert figures["sigterm_resume"]["max_abs_weight_difference"] == 0.0
    assert figures["stored_vs_direct"]["mismatches"] == []
    assert figures["oom_backoff"]["final_batch"] == 100 and len(figures["oom_backoff"]["log"]) == 2  # 400 -> 200 -> 100
    assert figures["torchscript_model"]["model_file_equals_imported"] is True
    assert figures["exported_model"]["model_file_equals_imported"] is True
    assert {"forward fp32", "reference (Cohen) fp32", "rslib fp32"} <= set(figures["certify_speed"]["samples_per_s"])
    assert figures["train_speed"]["trainings"] == 33  # CIFAR-10's part of the grid at the smoke size
    assert [t["row"] for t in figures["train_speed"]["table2"]] == ["SmoothAdv", "AdvMacer"] * 3 + ["MACER"] * 3
    table = (tmp_path / "device_check.txt").read_text()
    assert all(name in table for name in CHECKS) and "Projected GPU-hours of the full grid" in table
    assert table.splitlines()[0] in result.stdout


def test_device_check_refuses_the_full_size_without_a_gpu(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/device_check.py"), "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "pass --smoke to exercise it on a CPU" in result.stderr
    assert not (tmp_path / "device_check.json").exists()
