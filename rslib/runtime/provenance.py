"""Provenance carried by every result (SPEC "Reliability"): config hash, rslib version and
commit, package versions, device, and the SLURM job that produced it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rslib import __version__

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "snakemake", "snakemake-executor-plugin-slurm")


def config_hash(obj: Any) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit() -> str:
    """Commit of the checkout rslib is imported from (``-dirty`` when modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: Any = None) -> str:
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def collect(device: Any = None, config: Any = None) -> dict[str, Any]:
    """Provenance record for a result produced now on ``device`` from ``config``."""
    record: dict[str, Any] = {
        "rslib_version": __version__,
        "rslib_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device_description(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if config is not None:
        record["config_hash"] = config_hash(config)
    for var in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES"):
        if var in os.environ:
            record[var.lower()] = os.environ[var]
    return record
