"""Glue for ``workflow_scripts/``: log redirection and one-line errors. Kept tiny so that the
scripts stay thin and everything they call lives in testable rslib functions."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from .errors import RslibError


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM inside :func:`run_logged`: exit status 128 + 15."""

    def __init__(self) -> None:
        super().__init__(143)


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated()


def run_logged(log_path: str, main: Callable[[], Any]) -> None:
    """Run ``main`` with stdout/stderr going to ``log_path``.

    An :class:`RslibError` (bad input) is reported as one line, in the log and on the terminal,
    and exits with status 1; any other exception keeps its traceback in the log.

    SIGTERM (SLURM's time limit or ``scancel``, a cancelled Snakemake run) raises
    :class:`Terminated` (``SystemExit(143)``) in the main thread, so ``finally`` blocks run and
    :func:`rslib.io.atomic_path` removes its temporary file before the process exits non-zero.
    Training installs its own handler while its loop runs (state saved, then exit 143) and
    restores this one afterwards.
    """
    import signal
    import threading

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        with open(log_path, "a", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
            try:
                main()
            except RslibError as exc:
                print(f"error: {exc}", file=log)
                # one write(2) of the whole line: jobs failing at once (two shards reading one
                # corrupt model) otherwise interleave their text and newlines on the terminal
                os.write(sys.__stderr__.fileno(), f"error: {exc}\n".encode())
                raise SystemExit(1) from None
            except Terminated:
                print("terminated by SIGTERM: temporary files removed, exiting with status 143", file=log)
                raise
            except Exception:
                traceback.print_exc(file=log)
                raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def evaluation_subset(meta_path: str, evaluation: Mapping[str, int]) -> list[int]:
    """The dataset's fixed evaluation indices (same for every method and ensemble):
    ``evaluation`` is the configuration's ``datasets.<name>.evaluation`` (start, stride, count)."""
    from .data import evaluation_indices

    meta = json.loads(Path(meta_path).read_text())
    return evaluation_indices(int(meta["n_test"]), evaluation["start"], evaluation["stride"], evaluation["count"])
