"""Installable where users are: pyproject.toml's ranges admit the exact versions the demo and CI
install (envs/constraints.txt), and the conda environment (envs/rslib.yaml) pins the same ones."""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from workflow_helpers import REPO


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_pyproject_ranges_admit_the_constrained_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra
                     if not r.startswith("rslib")]
    pins = constraints()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in envs/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_the_conda_environment_pins_the_constrained_versions():
    env = yaml.safe_load((REPO / "envs/rslib.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = constraints()
    assert pip, "envs/rslib.yaml pins nothing"
    for line in pip:
        name, version = re.split(r"==", line)
        assert pins[canonicalize_name(name)] == version, line
