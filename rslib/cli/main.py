"""The entry points of the command line: ``python -m rslib`` with its subcommands, and the
console scripts ``rslib``, ``rslib-certify`` and ``rslib-analyze`` (pyproject.toml)."""


from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rslib import __version__

PROG = "python -m rslib"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rslib {certify,analyze} …``; returns the exit status."""
    from rslib.cli import analyze, certify

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Randomized smoothing on the command line: certify a model of your own (Cohen et al.'s "
                    "CERTIFY, written as their TSV) and analyze certificate TSVs.",
        epilog=f"Run '{PROG} certify --help' or '{PROG} analyze --help' for the arguments of each command.",
    )
    parser.add_argument("--version", action="version", version=f"rslib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (certify, analyze):
        sub = commands.add_parser(module.NAME, help=module.SUMMARY, description=module.DESCRIPTION,
                                  epilog=module.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return _report_errors(lambda: args.run(args))


def certify_main(argv: Sequence[str] | None = None) -> int:
    """The ``rslib-certify`` console script: ``python -m rslib certify``."""
    return main(["certify", *(sys.argv[1:] if argv is None else argv)])


def analyze_main(argv: Sequence[str] | None = None) -> int:
    """The ``rslib-analyze`` console script: ``python -m rslib analyze``."""
    return main(["analyze", *(sys.argv[1:] if argv is None else argv)])


def _report_errors(run: Callable[[], int | None]) -> int:
    """Run a command; a user-fixable failure becomes one ``error:`` line on stderr and status 1."""
    from rslib.runtime.errors import RslibError
    from rslib.runtime.jobs import os_error_line

    try:
        return int(run() or 0)
    except (RslibError, ValueError) as exc:  # ValueError: rslib's one-line argument checks (Smooth, metrics)
        print(f"error: {exc}", file=sys.stderr)
    except BrokenPipeError:  # the reader of stdout has gone (| head): stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1
