"""Glue for ``workflow_scripts/``: log redirection and one-line errors. Kept tiny so that the
scripts stay thin and everything they call lives in testable rslib functions."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from .errors import RslibError


def run_logged(log_path: str, main: Callable[[], Any]) -> None:
    """Run ``main`` with stdout/stderr going to ``log_path``.

    An :class:`RslibError` (bad input) is reported as one line, in the log and on the terminal,
    and exits with status 1; any other exception keeps its traceback in the log.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        try:
            main()
        except RslibError as exc:
            print(f"error: {exc}", file=log)
            print(f"error: {exc}", file=sys.__stderr__, flush=True)
            raise SystemExit(1) from None
        except Exception:
            traceback.print_exc(file=log)
            raise


def evaluation_subset(meta_path: str, every: int, max_images: int) -> list[int]:
    """The dataset's fixed evaluation indices (same for every method and ensemble)."""
    from .data import evaluation_indices

    meta = json.loads(Path(meta_path).read_text())
    return evaluation_indices(int(meta["n_test"]), int(every), int(max_images))
