"""Running the real Snakemake workflow from tests, in a scratch working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
#: What the tiny local and SLURM runs build: training, sharded certification and the summary table.
TINY_TARGET = "results/certified_accuracy.tex"


def write_config(workdir: Path, base: str = "tests/configs/tiny.yaml", **overrides) -> Path:
    """Copy a config into ``workdir`` with top-level keys replaced by ``overrides``."""
    config = yaml.safe_load((REPO / base).read_text())
    config.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, config: Path | None = None, timeout: int = 900, cwd: Path = REPO,
              repo: Path = REPO):
    """Run ``repo``'s Snakefile (default: this repository's) with working directory ``workdir``;
    returns the CompletedProcess."""
    cmd = [SNAKEMAKE, "-s", str(repo / "Snakefile"), "-d", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def job_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run (Snakemake prints it on stdout or stderr)."""
    counts: dict[str, int] = {}
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats")) + 3
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow's code (Snakefile, rules, scripts, rslib, schemas, report, paper, presets),
    for tests that edit a script and watch what Snakemake reruns."""
    import shutil

    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("rules", "workflow_scripts", "rslib", "schemas", "report", "paper", "envs", "presets"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
