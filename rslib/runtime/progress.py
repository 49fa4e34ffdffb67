"""Progress lines for long jobs (training epochs, certified images): done/total, rate, ETA."""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
    """``75.3`` → ``"1:15"``, ``3725`` → ``"1:02:05"`` (h:mm:ss past an hour)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress(done: int, total: int, started: float, unit: str, now: float | None = None, resumed: int = 0) -> str:
    """``"10/100 images (3.21 images/s, 0:03 elapsed, ETA 0:28)"`` for ``done`` of ``total``
    units since ``started`` (a :func:`time.perf_counter` value). The ETA assumes the rate so far.
    ``resumed``: units of ``done`` that an earlier run did (not counted in the rate)."""
    elapsed = (time.perf_counter() if now is None else now) - started
    new = done - resumed
    rate = new / elapsed if elapsed > 0 else float("inf")
    eta = (total - done) / rate if new and rate != float("inf") else 0.0
    shown = f"{rate:.3g}" if rate != float("inf") else "-"
    return (f"{done}/{total} {unit} ({shown} {unit}/s, {format_duration(elapsed)} elapsed, "
            f"ETA {format_duration(eta) if new else '?'})")
