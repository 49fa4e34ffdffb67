"""The embedded demo's training converges for every method and seed (demo/config.yaml,
"Convergence"): a collapsed model would look like a bug in the algorithm it stands for.

Trains every method of demo/config.yaml with its configured seeds at σ = 0.50, the demo's harder
noise level (where AdvMacer used to collapse), exactly as the workflow's ``train`` rule does
(``rslib.training.driver.run_training``, the demo's hyper-parameters and held-out images), and certifies
the demo's evaluation images with the demo's CERTIFY settings. Clean accuracy under noise is the
certified accuracy at radius 0, the "accuracy" of the demo's tables. The schedule keeps a margin
for other machines' CPU kernels: over training seeds 0-5 and 1 or 2 threads, no model was more
than 6 points below any Gaussian model, and the models of every other method (Gaussian trains one
seed) lay within 0.05 of each other (the "Convergence" comment of demo/config.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SIGMA = 0.5
#: demo/config.yaml: within 10 points of Gaussian training at the same σ ...
MAX_GAP_TO_GAUSSIAN = 0.10
#: ... and the seeds of one method within 0.10 of each other
MAX_SEED_SPREAD = 0.10


@pytest.fixture(scope="module")
def demo_accuracies(tmp_path_factory) -> dict[tuple[str, int], float]:
    from rslib.models.checkpoint import load_model
    from rslib.data.load import load_split
    from rslib.data.prepare import prepare_dataset
    from rslib.data.registry import evaluation_indices
    from rslib.experiment.config import merged_hparams
    from rslib.certification.smooth import Smooth
    from rslib.training.driver import run_training

    config = yaml.safe_load((REPO / "demo/config.yaml").read_text())
    data = config["datasets"]["digits"]
    root = tmp_path_factory.mktemp("demo-convergence")
    meta = prepare_dataset("digits", root / "data")
    test = load_split(meta, "test")
    ev = data["evaluation"]
    indices = evaluation_indices(len(test), ev["start"], ev["stride"], ev["count"])
    cert = config["certify"]
    accuracies = {}
    for method, per_dataset in config["methods"].items():
        for seed in per_dataset["digits"]["seeds"]:
            folder = root / f"{method}-seed{seed}"
            run_training(
                data_meta=meta, out_model=folder / "model.pt", checkpoint_dir=folder / "ckpt", dataset="digits",
                arch=data["arch"], method=method, sigma=SIGMA, seed=seed,
                hparams=merged_hparams(config, method, "digits", SIGMA), device="cpu", threads=1,
                heldout_images=data["heldout_images"],
            )
            model, _, _ = load_model(folder / "model.pt", sigma=SIGMA)
            smooth = Smooth(model, 10, SIGMA, noise_seed=config["noise_seed"])
            correct = 0
            for i in indices:
                x, label = test[i]
                prediction, _ = smooth.certify(x, cert["n0"], cert["n"], cert["alpha"], cert["batch_size"], index=i)
                correct += prediction == label
            accuracies[(method, seed)] = correct / len(indices)
    return accuracies


def test_every_demo_model_is_within_ten_points_of_gaussian_training(demo_accuracies):
    gaussian = demo_accuracies[("gaussian", 0)]
    assert gaussian > 0.5, f"Gaussian training itself did not converge: {gaussian}"
    collapsed = {k: v for k, v in demo_accuracies.items() if v < gaussian - MAX_GAP_TO_GAUSSIAN}
    assert not collapsed, f"clean accuracy more than 10 points below Gaussian's {gaussian:.2f}: {collapsed}"


def test_the_seeds_of_each_demo_method_agree(demo_accuracies):
    methods = {method for method, _ in demo_accuracies}
    for method in methods:
        values = [v for (m, _), v in demo_accuracies.items() if m == method]
        assert max(values) - min(values) <= MAX_SEED_SPREAD, f"{method}: seeds spread {values}"
    assert len([m for m, _ in demo_accuracies if m == "advmacer"]) == 3  # the method that used to collapse
