"""Where released checkpoints and published certification logs come from, and which are missing.

``presets/released-files.yaml`` is the one manifest of the released files the presets use: per
file, the authors' repository, the archive or folder it comes from as their README names it, its
path inside that archive, its format and σ. :func:`missing_files_message` lists every configured
file that is not on disk, each with where to get it, so that a run (or a dry run) stops once,
before any job, instead of naming one missing file per attempt.

No torch here: the Snakefile reads this module while it builds the DAG.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReleasedFile:
    """One file of the manifest: where it lies here and where it comes from."""

    local_path: str  #: relative to the working directory, as the presets name it
    repository: str  #: the authors' GitHub repository (owner/name)
    archive: str  #: the archive or folder it comes from, as their README names it
    how: str  #: how to get that archive or folder
    path: str  #: its path inside the archive or folder
    format: str  #: a released-checkpoint format (rslib.models.released.FORMATS) or "cohen-log"
    sigma: float

    def origin(self) -> str:
        """Where to get it (its archive or folder), in one line."""
        return f"{self.repository}, {self.archive}: {self.how}"


def load_manifest(path: str | os.PathLike) -> dict[str, ReleasedFile]:
    """The manifest's files keyed by their normalised local path."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text())
    sources: Mapping[str, Mapping[str, Any]] = raw["sources"]
    files = {}
    for entry in raw["files"]:
        source = sources[entry["source"]]
        local = os.path.normpath(f"{source['local']}/{entry['path']}")
        files[local] = ReleasedFile(local_path=local, repository=source["repository"], archive=source["archive"],
                                    how=" ".join(str(source["how"]).split()), path=entry["path"],
                                    format=entry["format"], sigma=float(entry["sigma"]))
    return files


def missing_files_message(paths: Iterable[str], manifest: Mapping[str, ReleasedFile]) -> str | None:
    """None when every configured released file and published log in ``paths`` exists; else one
    message listing each missing file (in configured order) under where to get it: its archive or
    folder from the manifest, or "a file of your own" when the manifest does not list it."""
    missing = list(dict.fromkeys(p for p in paths if not os.path.exists(p)))
    if not missing:
        return None
    groups: dict[str, list[str]] = {}
    for p in missing:
        known = manifest.get(os.path.normpath(p))
        where = f"from {known.origin()}" if known else "not in presets/released-files.yaml (files of your own)"
        groups.setdefault(where, []).append(p)
    lines = [f"{len(missing)} configured released file{'s are' if len(missing) > 1 else ' is'} missing "
             f"(methods.<method>.<dataset>.released / published_logs; paths relative to {os.getcwd()}); get "
             f"{'them' if len(missing) > 1 else 'it'}, or correct the paths, then rerun:"]
    for where, files in groups.items():
        lines.append(f"  {where}:")
        lines += [f"    {p}" for p in files]
    return "\n".join(lines)
