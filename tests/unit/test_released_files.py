"""The manifest of released files (presets/released-files.yaml, rslib.experiment.released_files): it lists
every file the presets name, with their format and σ, and a run with files missing names every
missing one with where to get it."""

from __future__ import annotations

import os

import pytest
import yaml

from rslib.experiment.config import sigma_key
from rslib.experiment.released_files import load_manifest, missing_files_message
from workflow_helpers import REPO

MANIFEST = REPO / "presets/released-files.yaml"


def preset_files(preset: dict) -> list[tuple[str, str, str]]:
    """(path, format, σ) of every released checkpoint and published log a preset configures."""
    out = []
    for per_dataset in preset["methods"].values():
        for settings in per_dataset.values():
            for sigma, released in settings.get("released", {}).items():
                out += [(f, released["format"], sigma_key(sigma)) for f in released["files"]]
            out += [(f, "cohen-log", sigma_key(s)) for s, f in settings.get("published_logs", {}).items()]
    return out


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "presets").glob("*.yaml")
                                          if p.name != MANIFEST.name))
def test_every_released_file_of_a_preset_is_in_the_manifest_with_its_format_and_sigma(preset):
    manifest = load_manifest(MANIFEST)
    for path, fmt, sigma in preset_files(yaml.safe_load((REPO / "presets" / preset).read_text())):
        entry = manifest.get(os.path.normpath(path))
        assert entry is not None, f"{path} is not in {MANIFEST.name}"
        assert (entry.format, sigma_key(entry.sigma)) == (fmt, sigma), path
        assert entry.path in path and entry.repository.count("/") == 1


def test_the_manifest_lists_each_file_once_and_only_files_a_preset_uses():
    raw = yaml.safe_load(MANIFEST.read_text())
    manifest = load_manifest(MANIFEST)
    assert len(manifest) == len(raw["files"])  # no duplicate
    used = {os.path.normpath(p) for preset in (REPO / "presets").glob("*.yaml") if preset != MANIFEST
            for p, _, _ in preset_files(yaml.safe_load(preset.read_text()))}
    assert set(manifest) == used


def test_missing_files_are_listed_at_once_under_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(MANIFEST)
    known = list(manifest)[:2]
    (tmp_path / "mine").write_text("present")
    assert missing_files_message(["mine"], manifest) is None
    message = missing_files_message([*known, "mine", "elsewhere/own.pth", known[0]], manifest)
    lines = message.splitlines()
    assert lines[0] == (f"3 configured released files are missing (methods.<method>.<dataset>.released / "
                        f"published_logs; paths relative to {tmp_path}); get them, or correct the paths, then rerun:")
    origin = manifest[known[0]].origin()
    assert lines[1:] == [f"  from {origin}:", f"    {known[0]}", f"    {known[1]}",
                         "  not in presets/released-files.yaml (files of your own):", "    elsewhere/own.pth"]
