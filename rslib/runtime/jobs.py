"""Glue for ``workflow_scripts/``: log redirection and one-line errors. Kept tiny so that the
scripts stay thin and everything they call lives in testable rslib functions."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from rslib.runtime.errors import RslibError


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM inside :func:`run_logged`: exit status 128 + 15."""

    def __init__(self) -> None:
        super().__init__(143)


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated()


def run_logged(log_path: str, main: Callable[[], Any]) -> None:
    """Run ``main`` with stdout/stderr going to ``log_path``.

    An :class:`RslibError` (bad input) is reported as one line, in the log and on the terminal,
    and exits with status 1. So is an :class:`OSError` that names a file (a full disk, a
    read-only folder, a missing permission: "cannot write <file>: No space left on device"),
    its traceback kept in the log. Any other exception (a bug) keeps its traceback in the log
    and puts one line on the terminal naming the exception and the log (exit status 1), so that
    Snakemake's "Error in rule …" is never the only thing a user sees.

    SIGTERM (SLURM's time limit or ``scancel``, a cancelled Snakemake run) raises
    :class:`Terminated` (``SystemExit(143)``) in the main thread, so ``finally`` blocks run and
    :func:`rslib.runtime.io.atomic_path` removes its temporary file before the process exits non-zero.
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
                _terminal_line(f"error: {exc}")
                raise SystemExit(1) from None
            except Terminated:
                print("terminated by SIGTERM: temporary files removed, exiting with status 143", file=log)
                raise
            except OSError as exc:
                traceback.print_exc(file=log)
                line = f"error: {os_error_line(exc)} (traceback in {log_path})"
                print(line, file=log)
                _terminal_line(line)
                raise SystemExit(1) from None
            except Exception as exc:
                traceback.print_exc(file=log)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _terminal_line(f"error: {type(exc).__name__}: {first[:300]} (traceback in {log_path})")
                raise SystemExit(1) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminal_line(line: str) -> None:
    """One write(2) of the whole line to the job's real stderr: jobs failing at once (two shards
    reading one corrupt model) otherwise interleave their text and newlines on the terminal."""
    os.write(sys.__stderr__.fileno(), f"{line}\n".encode())


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the file and the cause: "cannot write results/x.tsv: No
    space left on device" (the operation is guessed from the error: ENOSPC/EROFS/EDQUOT are
    writes), or the exception's own text when it names no file."""
    import errno

    cause = exc.strerror or str(exc)
    if exc.filename is None:
        return f"{type(exc).__name__}: {cause}"
    target = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 else "")
    writing = exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG)
    return f"cannot {'write' if writing else 'access'} {target}: {cause}"


#: The SLURM commands the executor plugin runs on the submit host: submission and status queries.
SLURM_COMMANDS = ("sbatch", "squeue")


def missing_cluster_commands(executor: str | None) -> str | None:
    """One line saying which SLURM commands are missing from the PATH when the run uses the
    ``slurm`` executor (``--profile slurm``), else None. Without them the plugin would submit
    nothing and retry every job with "No such file or directory: 'sacct'"."""
    import shutil

    if executor != "slurm":
        return None
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if not missing:
        return None
    return (f"error: --profile slurm needs SLURM's {' and '.join(missing)} on the PATH, and this host has "
            f"{'neither' if len(missing) > 1 else 'no ' + missing[0]}: run from a SLURM submit host (or load its "
            f"module), or run locally with --cores N instead of --profile slurm")
