"""Training loop: determinism, checkpoint/resume, SIGTERM handling, augmentation, Gaussian loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rslib.models.checkpoint import load_model
from rslib.data.prepare import prepare_dataset
from rslib.training.driver import run_training
from rslib.training.gaussian import Gaussian
from rslib.training.loop import STATE_FILE, augment_batch

REPO = Path(__file__).resolve().parents[2]

HPARAMS = {
    "epochs": 3,
    "batch_size": 128,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_milestones": [2],
    "lr_gamma": 0.1,
    "augment": {"crop_padding": 1, "flip": False},
}


@pytest.fixture(scope="module")
def digits_meta(tmp_path_factory) -> Path:
    return prepare_dataset("digits", tmp_path_factory.mktemp("data") / "digits")


def train(meta: Path, root: Path, hparams=HPARAMS, seed: int = 0, method: str = "gaussian") -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    run_training(
        data_meta=meta, out_model=root / "model.pt", checkpoint_dir=root / "ckpt", dataset="digits",
        arch="small_cnn", method=method, sigma=0.25, seed=seed, hparams=hparams, device="cpu", threads=1,
    )
    model, spec, extra = load_model(root / "model.pt", dataset="digits", sigma=0.25)
    assert spec.method == method and len(extra["history"]) == hparams["epochs"]
    return model.state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def reference(digits_meta, tmp_path_factory) -> dict[str, torch.Tensor]:
    """An uninterrupted run."""
    return train(digits_meta, tmp_path_factory.mktemp("reference"))


def test_training_is_deterministic_and_seed_dependent(digits_meta, reference, tmp_path):
    assert_same_weights(reference, train(digits_meta, tmp_path / "again"))
    other = train(digits_meta, tmp_path / "seed1", seed=1)
    assert not torch.equal(reference["1.fc.weight"], other["1.fc.weight"])


def terminating(method_cls, at: int):
    """``method_cls`` whose loss sends SIGTERM to this process at global step ``at``
    (a deterministic stand-in for a SLURM preemption in the middle of an epoch)."""
    calls = {"n": 0}

    class TerminateAtStep(method_cls):
        def loss(self, model, x, y, epoch):
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().loss(model, x, y, epoch)

    return TerminateAtStep


@pytest.mark.parametrize("stop_at", [5, 11])  # 11 steps per epoch: mid-epoch 1, and the last step of epoch 1
def test_sigterm_checkpoints_and_resume_matches_uninterrupted(digits_meta, reference, tmp_path, monkeypatch, stop_at):
    from rslib.training import driver as training

    monkeypatch.setitem(training.METHODS, "gaussian", terminating(Gaussian, stop_at))
    with pytest.raises(SystemExit) as stopped:
        train(digits_meta, tmp_path)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert (tmp_path / "ckpt" / STATE_FILE).exists()
    assert not (tmp_path / "model.pt").exists(), "an interrupted run must not leave a finished-looking model"
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)
    assert (state["epoch"], state["step"]) == ((0, stop_at) if stop_at < 11 else (1, 0))

    monkeypatch.setitem(training.METHODS, "gaussian", Gaussian)
    assert_same_weights(reference, train(digits_meta, tmp_path))


def test_killed_process_resumes_to_same_weights(digits_meta, reference, tmp_path):
    """A real subprocess killed with SIGKILL after its first epoch checkpoint resumes exactly."""
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from pathlib import Path
        from rslib.training.driver import run_training
        from rslib.training.loop import train_loop
        import rslib.training.loop as loop

        # slow each epoch down so the kill lands while training is still running
        original = loop._save_state
        def slow_save(*args, **kwargs):
            original(*args, **kwargs)
            time.sleep(1.0)
        loop._save_state = slow_save
        torch.set_num_threads(1)
        run_training(data_meta={str(digits_meta)!r}, out_model={str(tmp_path / 'model.pt')!r},
                     checkpoint_dir={str(tmp_path / 'ckpt')!r}, dataset="digits", arch="small_cnn",
                     method="gaussian", sigma=0.25, seed=0, hparams={HPARAMS!r}, device="cpu", threads=1)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    state_path = tmp_path / "ckpt" / STATE_FILE
    deadline = time.time() + 120
    while not state_path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert state_path.exists(), proc.stderr.read()
    assert not (tmp_path / "model.pt").exists()
    epoch = torch.load(state_path, weights_only=True)["epoch"]
    assert 1 <= epoch < HPARAMS["epochs"]
    assert_same_weights(reference, train(digits_meta, tmp_path))


def test_stale_state_from_other_settings_is_discarded(digits_meta, reference, tmp_path):
    other = dict(HPARAMS, lr=0.01, epochs=1)
    train(digits_meta, tmp_path, hparams=other)
    assert (tmp_path / "ckpt" / STATE_FILE).exists()
    (tmp_path / "model.pt").unlink()
    assert_same_weights(reference, train(digits_meta, tmp_path))


def test_gaussian_loss_decreases(digits_meta, tmp_path):
    torch.set_num_threads(1)
    extra = run_training(
        data_meta=digits_meta, out_model=tmp_path / "m.pt", checkpoint_dir=tmp_path / "c", dataset="digits",
        arch="small_cnn", method="gaussian", sigma=0.25, seed=0, hparams=dict(HPARAMS, epochs=4, lr_milestones=[]), device="cpu",
    )
    losses = [h["loss"] for h in extra["history"]]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0], losses
    assert extra["train_seconds"] > 0 and extra["provenance"]["rslib_version"]


def test_gaussian_loss_is_cross_entropy_on_one_noisy_copy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(7)
    loss, logits = Gaussian(0.5, {}).loss(model, x, y, epoch=0)
    torch.manual_seed(7)
    noisy = x + 0.5 * torch.randn_like(x)
    expected = torch.nn.functional.cross_entropy(model(noisy), y)
    assert torch.allclose(loss, expected) and torch.allclose(logits, model(noisy))


def test_augment_crop_is_a_shifted_window_and_flip_mirrors():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    torch.manual_seed(3)
    out = augment_batch(x, crop_padding=1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = augment_batch(x, flip=True)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    assert torch.equal(augment_batch(x), x)


def test_training_curve_is_recorded_every_k_epochs_and_at_the_end(digits_meta, tmp_path):
    import csv

    from rslib.training.curves import CURVE_COLUMNS

    torch.set_num_threads(1)
    curve = {"every": 2, "images": 4, "n0": 100, "n": 200, "alpha": 0.001, "batch_size": 200}
    extra = run_training(
        data_meta=digits_meta, out_model=tmp_path / "m.pt", checkpoint_dir=tmp_path / "c", dataset="digits",
        arch="small_cnn", method="gaussian", sigma=0.25, seed=0, hparams=dict(HPARAMS, epochs=3), device="cpu",
        curve=curve, out_curve=tmp_path / "curve.csv", eval_indices=list(range(0, 500, 5)),
    )
    with open(tmp_path / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CURVE_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    assert [h.get("acr") is not None for h in extra["history"]] == [False, True, True]
    assert float(rows[1]["train_seconds"]) == pytest.approx(extra["train_seconds"])


#: Small settings of every method (few copies / attack steps) for the resume test.
METHOD_HPARAMS = {
    "gaussian": {},
    "smoothadv": {"attack_steps": 1, "num_noise_vec": 2, "epsilon": 0.5, "warmup_epochs": 2},
    "advmacer": {"attack_steps": 1, "num_noise_vec": 2, "epsilon": 0.5, "warmup_epochs": 2,
                 "gamma": 8.0, "beta": 16.0, "lbd": 2.0},
    "macer": {"num_noise_vec": 2, "gamma": 8.0, "beta": 16.0, "lbd": 2.0},
    "consistency": {"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
    "smoothmix": {"num_noise_vec": 2, "num_steps": 2, "eta": 5.0, "alpha": 0.5, "warmup": 1},
}


def test_every_registered_method_is_covered():
    from rslib.training.driver import METHODS

    assert set(METHOD_HPARAMS) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHOD_HPARAMS))
def test_every_method_resumes_after_sigterm_to_identical_weights(digits_meta, tmp_path, monkeypatch, method):
    from rslib.training import driver as training

    hparams = dict(HPARAMS, epochs=2, lr_milestones=[1], **METHOD_HPARAMS[method])
    reference_weights = train(digits_meta, tmp_path / "reference", hparams=hparams, method=method)
    original = training.METHODS[method]
    monkeypatch.setitem(training.METHODS, method, terminating(original, 7))  # mid-epoch 0 (11 steps per epoch)
    with pytest.raises(SystemExit):
        train(digits_meta, tmp_path / "resumed", hparams=hparams, method=method)
    assert not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.setitem(training.METHODS, method, original)
    assert_same_weights(reference_weights, train(digits_meta, tmp_path / "resumed", hparams=hparams, method=method))


def test_changed_curve_images_do_not_resume_the_old_training_state(digits_meta, tmp_path, capfd):
    """The saved state holds the curve's history: a rerun with other curve images (a changed
    evaluation subset) must start afresh, not resume the finished state and rewrite the curve
    computed on the old images."""
    torch.set_num_threads(1)
    curve = {"every": 1, "images": 3, "n0": 100, "n": 200, "alpha": 0.001, "batch_size": 200}
    old_images, new_images = list(range(0, 500, 5)), list(range(2, 500, 5))

    def run(root: Path, ckpt: Path, eval_indices: list[int]) -> list[float]:
        run_training(
            data_meta=digits_meta, out_model=root / "m.pt", checkpoint_dir=ckpt, dataset="digits",
            arch="small_cnn", method="gaussian", sigma=0.25, seed=0, hparams=dict(HPARAMS, epochs=2), device="cpu",
            curve=curve, out_curve=root / "curve.csv", eval_indices=eval_indices,
        )
        return [h["acr"] for h in load_model(root / "m.pt")[2]["history"]]

    old = run(tmp_path / "a", tmp_path / "ckpt", old_images)
    fresh = run(tmp_path / "fresh", tmp_path / "fresh-ckpt", new_images)
    assert old != fresh  # the two image sets give different curves (else this test shows nothing)
    capfd.readouterr()
    rerun = run(tmp_path / "a", tmp_path / "ckpt", new_images)
    assert "discarding training state" in capfd.readouterr().err
    assert rerun == fresh
    # the same images again: the finished state is resumed (no training), same curve
    assert run(tmp_path / "a", tmp_path / "ckpt", new_images) == fresh
    assert "resuming from" in capfd.readouterr().err


def test_an_edited_user_method_does_not_resume_its_old_training_state(digits_meta, tmp_path, monkeypatch, capfd):
    """The SHA-256 of the file defining a method of the user's own belongs to the resume key and is
    saved with the model: after that file changes, a rerun trains from epoch 0 instead of returning
    the finished state of the old loss; with the file unchanged, the finished state is resumed."""
    import hashlib

    torch.set_num_threads(1)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader appends the working directory
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "um_edited_loss.py"
    source.write_text((REPO / "tests/workflow/user_method.py").read_text())
    hparams = dict(HPARAMS, epochs=1, num_noise_vec=1, label_smoothing=0.1)

    def run() -> dict:
        return run_training(
            data_meta=digits_meta, out_model=tmp_path / "m.pt", checkpoint_dir=tmp_path / "ckpt", dataset="digits",
            arch="small_cnn", method="gaussian_ls", method_module="um_edited_loss", sigma=0.25, seed=0,
            hparams=hparams, device="cpu",
        )

    def digest() -> str:
        return hashlib.sha256(source.read_bytes()).hexdigest()

    try:
        first = run()
        assert first["method_source"] == {"module": "um_edited_loss", "sha256": digest()}
        assert load_model(tmp_path / "m.pt")[2]["method_source"] == first["method_source"]
        capfd.readouterr()
        run()
        assert "resuming from" in capfd.readouterr().err
        source.write_text(source.read_text() + "\n# the loss, edited\n")
        edited = run()
        err = capfd.readouterr().err
        assert "discarding training state" in err and "resuming from" not in err
        assert edited["method_source"]["sha256"] == digest() != first["method_source"]["sha256"]
    finally:
        sys.modules.pop("um_edited_loss", None)
