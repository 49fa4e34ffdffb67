"""``rslib.runtime.jobs.run_logged``, the wrapper of every workflow script: one-line errors, and
SIGTERM (SLURM time limit, ``scancel``, a cancelled Snakemake run) → a clean, non-zero exit that
removes temporary files, without taking over training's own SIGTERM handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rslib.runtime.errors import RslibError
from rslib.runtime.io import atomic_path
from rslib.runtime.jobs import Terminated, run_logged

REPO = Path(__file__).resolve().parents[2]

#: A workflow-script-like process: run_logged(main) where main sits inside atomic_path.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from rslib.runtime.io import atomic_path
    from rslib.runtime.jobs import run_logged

    out, log = sys.argv[1], sys.argv[2]

    def main():
        with atomic_path(out) as tmp:
            tmp.write_text("half of an output")
            print("writing", file=sys.__stdout__, flush=True)
            time.sleep(120)

    run_logged(log, main)
    """
)


def test_sigterm_while_writing_leaves_no_temp_file_and_exits_nonzero(tmp_path):
    out, log = tmp_path / "results" / "out.tsv", tmp_path / "logs" / "job.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), str(log)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # it is mid-write
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143
    assert list(out.parent.iterdir()) == []  # neither the output nor its *.tmp
    assert "terminated by SIGTERM" in log.read_text()


def test_sigterm_in_process_raises_terminated_and_restores_the_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)

    def main():
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
            raise AssertionError("not reached")

    started = time.perf_counter()
    with pytest.raises(Terminated) as info:
        run_logged(str(tmp_path / "log.txt"), main)
    assert time.perf_counter() - started < 4
    assert isinstance(info.value, SystemExit) and info.value.code == 143
    assert list(tmp_path.iterdir()) == [tmp_path / "log.txt"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_rslib_error_is_one_line_and_exit_1(tmp_path, capsys):
    def main():
        raise RslibError("something named, and how to fix it")

    with pytest.raises(SystemExit) as info:
        run_logged(str(tmp_path / "log.txt"), main)
    assert info.value.code == 1
    assert (tmp_path / "log.txt").read_text() == "error: something named, and how to fix it\n"


def test_training_keeps_its_own_sigterm_handling_inside_run_logged(tmp_path, monkeypatch):
    """Inside run_logged, a SIGTERM during training still checkpoints and exits 143 (the loop's
    handler takes over while it runs), rather than aborting the step."""
    import torch

    from rslib.training import driver as training
    from rslib.data.prepare import prepare_dataset
    from rslib.training.gaussian import Gaussian
    from rslib.training.loop import STATE_FILE, Preempted

    calls = {"n": 0}

    class TerminateAtStep(Gaussian):
        def loss(self, model, x, y, epoch):
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().loss(model, x, y, epoch)

    meta = prepare_dataset("digits", tmp_path / "data")
    monkeypatch.setitem(training.METHODS, "gaussian", TerminateAtStep)
    torch.set_num_threads(1)
    hparams = {"epochs": 1, "batch_size": 256, "lr": 0.05}
    with pytest.raises(Preempted) as info:
        run_logged(str(tmp_path / "log.txt"), lambda: training.run_training(
            data_meta=meta, out_model=tmp_path / "model.pt", checkpoint_dir=tmp_path / "ckpt", dataset="digits",
            arch="small_cnn", method="gaussian", sigma=0.25, seed=0, hparams=hparams, device="cpu", threads=1,
        ))
    assert info.value.code == 143
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 3)
    assert not (tmp_path / "model.pt").exists()
    assert not list(tmp_path.rglob("*.tmp"))


#: A job that writes its output through atomic_path with a file-size limit: a real write failure
#: (EFBIG, as a full disk gives ENOSPC) in the middle of the output.
FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from rslib.runtime.io import atomic_path
    from rslib.runtime.jobs import run_logged

    out, log = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG

    def main():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        with atomic_path(out) as tmp, open(tmp, "w") as f:
            for _ in range(1000):
                f.write("0\\t3\\t3\\t0.5\\t1\\t0.01\\n" * 10)

    run_logged(log, main)
    """
)


def test_a_write_failure_is_one_line_naming_the_output_and_the_cause(tmp_path):
    out, log = tmp_path / "results" / "certify.tsv", tmp_path / "logs" / "job.log"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(out), str(log)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"error: cannot write {out}: File too large (traceback in {log})\n"
    assert list(out.parent.iterdir()) == []  # neither the output nor its *.tmp
    assert "Traceback" in log.read_text()


def test_an_unexpected_error_puts_one_line_on_the_terminal_and_its_traceback_in_the_log(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from rslib.runtime.jobs import run_logged

        run_logged(sys.argv[1], lambda: {}["acr"])
        """
    )
    log = tmp_path / "job.log"
    proc = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"error: KeyError: 'acr' (traceback in {log})\n"
    assert "Traceback" in log.read_text() and "KeyError: 'acr'" in log.read_text()
