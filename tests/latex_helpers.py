"""Checks that a .tex artefact compiles where users compile it (issue 14): alone with pdflatex,
and ``\\input`` into a document that loads only booktabs; and that it is pure ASCII."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: The smallest paper that takes one of our tables: pdflatex's defaults plus booktabs.
HOST = r"""\documentclass{article}
\usepackage{booktabs}
\begin{document}
\begin{table}\centering
\input{%s}
\caption{A table of the workflow.}
\end{table}
\end{document}
"""


def require_pdflatex() -> None:
    """Skip without pdflatex, except under CI (``make test`` installs it there): fail instead,
    so that the compile checks can never be skipped silently where they are meant to run."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing under CI=true: `make latex-install` (root) installs it")
        pytest.skip("pdflatex is not installed (`make latex-install` as root installs it)")


def _pdflatex(source: Path, outdir: Path) -> None:
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={outdir}", source.name],
        cwd=source.parent, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"pdflatex {source}:\n{result.stdout[-3000:]}"
    assert (outdir / f"{source.stem}.pdf").read_bytes().startswith(b"%PDF"), source


def check_tex_artefact(path: Path, scratch: Path) -> None:
    """``path`` is ASCII, compiles alone, and its tabular compiles ``\\input`` into :data:`HOST`.
    pdflatex writes only into ``scratch`` (the artefact's folder stays as the workflow left it)."""
    data = path.read_bytes()
    bad = sorted({c for c in data.decode("utf-8", "replace") if not c.isascii()})
    assert not bad, f"{path} is not pure ASCII: {bad}"
    alone = scratch / f"{path.stem}-alone"
    alone.mkdir(parents=True)
    _pdflatex(path, alone)
    hosted = scratch / f"{path.stem}-input"
    hosted.mkdir(parents=True)
    host = hosted / "paper.tex"
    host.write_text(HOST % path.resolve().as_posix())
    _pdflatex(host, hosted)
