"""Errors that name a user-fixable problem in one line.

Workflow scripts print only the message of an :class:`RslibError` (no traceback), so each
message must say what is wrong, where, and what to do.
"""



class RslibError(RuntimeError):
    """Base class for errors caused by bad input rather than by a bug."""


def force_rebuild(path: object) -> str:
    """How to redo one damaged workflow output. Deleting it is not enough: Snakemake rebuilds
    nothing while the results after it exist ("Nothing to be done"); forcing its job makes the
    file newer than what depends on it, so rerunning the target rebuilds those too."""
    return f"snakemake --force {path} (with your run's --configfile/--profile/--cores options), then rerun your target"


class CheckpointError(RslibError):
    """A model or training-state file is missing, corrupt, or does not match its use."""


class ConfigError(RslibError):
    """A configuration value is invalid or inconsistent."""


class DataError(RslibError):
    """A dataset could not be obtained, verified, converted or loaded."""


class CertificateLogError(RslibError):
    """A published certification log cannot stand for a model (unreadable, or lacks images)."""


class CertificateError(RslibError, ValueError):
    """A certification TSV written by this workflow (a shard, or a merged file) is damaged or
    does not cover the evaluation subset. Also a ``ValueError``, as before it had a class."""
