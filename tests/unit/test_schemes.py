"""Named ensemble schemes (rslib.ensembles.schemes, rslib.ensembles.certify): ensemble naming, per-point EsbRS
weights from stored pseudo-model outputs, and certification from stored outputs against direct
evaluation of the member networks on the same noise, for every scheme."""

from __future__ import annotations

import pytest
import torch

from rslib.ensembles.certify import (
    certify_scheme_direct,
    certify_scheme_from_outputs,
    fit_weights,
    point_optimal_weights,
)
from rslib.ensembles.outputs import compute_member_outputs, compute_pseudo_outputs
from rslib.ensembles.rules import soft_rule
from rslib.certification.noise import NoiseStream, mix_seed
from rslib.ensembles.schemes import (
    SCHEMES,
    ensemble_label,
    ensemble_members,
    get_scheme,
    member_key,
    parse_ensemble_name,
)
from rslib.ensembles.weights import (
    estimate_coefficients,
    make_pseudo_models,
    optimal_weights_k2,
    pseudo_model_probabilities,
)
from tiny_models import tiny_model

SIGMA, ALPHA, N0, N, BATCH, SEED = 0.25, 0.001, 100, 300, 300, 3
IMAGES = [0, 2, 4, 6, 7]
SETTINGS = {
    "optimal": {"m": 3, "n": 4, "t": 0.3, "sigma_tilde": 0.05, "closed_form": "corrected"},
    "sween": {"epochs": 5, "augment": {"crop_padding": 1, "flip": False}, "threshold": 0.6, "alpha": 0.5},
    "k_consensus": {"k": 2},
}


@pytest.fixture(scope="module")
def dataset():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(1, 4, 4, generator=g), int(k % 3)) for k in range(8)]


@pytest.fixture(scope="module")
def members():
    return [tiny_model(s) for s in (11, 12, 13)]


KEYS = [member_key("gaussian", s) for s in (0, 1, 2)]


@pytest.fixture(scope="module")
def stored(members, dataset):
    return [
        {**compute_member_outputs(m, dataset, IMAGES, N0, N, BATCH, SEED, SIGMA, dtype=torch.float32),
         "perturbation": compute_pseudo_outputs(m, dataset, IMAGES, SEED, SIGMA,
                                                dict(SETTINGS["optimal"], member_key=key), BATCH)["perturbation"]}
        for m, key in zip(members, KEYS)
    ]


def test_ensemble_names_follow_the_paper():
    assert parse_ensemble_name("advmacer:1+smoothadv:2") == [("advmacer", 1), ("smoothadv", 2)]
    assert ensemble_label("advmacer:2+macer:1") == "EsbRS-AdvMacer×2+MACER×1"
    # first seeds in configured order: a larger ensemble extends a smaller one (Figure 3)
    seeds = {"advmacer": [4, 0, 1], "smoothadv": [0, 1]}
    assert ensemble_members("advmacer:2+smoothadv:1", seeds) == [("advmacer", 4), ("advmacer", 0), ("smoothadv", 0)]
    with pytest.raises(ValueError, match="needs 3 smoothadv models but only seeds"):
        ensemble_members("smoothadv:3", seeds)
    for bad in ("advmacer", "advmacer:0", "advmacer:1+advmacer:1", "advmacer:x"):
        with pytest.raises(ValueError, match="ensemble"):
            parse_ensemble_name(bad)
    with pytest.raises(ValueError, match="unknown ensemble scheme"):
        get_scheme("median")
    assert member_key("advmacer", 0) != member_key("advmacer", 1) != member_key("smoothadv", 0)


def test_stored_pseudo_model_outputs_give_algorithm_2_estimates(members, dataset):
    """Per-member pseudo-model outputs, stacked, are exactly Alg. 2's pooled samples: the same
    pseudo-models and the same noisy inputs for every member (shared noise, row j ↔ row j)."""
    opt = SETTINGS["optimal"]
    index, label = 4, 1
    x = dataset[index][0]
    stacked = torch.stack([
        pseudo_model_probabilities(m, x, index, key, SEED, SIGMA, opt["n"], opt["m"], opt["t"], opt["sigma_tilde"])
        for m, key in zip(members[:2], KEYS[:2])
    ])
    pseudo = [make_pseudo_models([m], opt["m"], opt["t"], opt["sigma_tilde"],
                                 torch.Generator().manual_seed(mix_seed(SEED, index, key)))[0]
              for m, key in zip(members[:2], KEYS[:2])]
    noise = NoiseStream(SEED).sample(index, "weights", 0, opt["n"], tuple(x.shape))
    reference = estimate_coefficients(members[:2], x, label, SIGMA, opt["n"], opt["m"], opt["t"], opt["sigma_tilde"],
                                      torch.Generator(), pseudo_models=pseudo, noise=noise)
    w = point_optimal_weights(stacked, label)
    assert torch.allclose(w, optimal_weights_k2(reference), atol=1e-12)
    assert float(w.sum()) == pytest.approx(1.0) and 0.0 < float(w[0]) < 1.0  # an interior optimum here


@pytest.mark.parametrize("name", list(SCHEMES))
def test_stored_outputs_certify_like_direct_evaluation(name, members, dataset, stored, tmp_path):
    scheme = get_scheme(name)
    fitted = None
    if scheme.fitted:
        images = torch.stack([dataset[i][0] for i in (1, 3, 5)])
        labels = torch.tensor([dataset[i][1] for i in (1, 3, 5)])
        fitted = fit_weights(scheme.fitted, members, images, labels, SIGMA, SETTINGS, seed=0)
        assert len(fitted) == 3 and sum(fitted) == pytest.approx(1.0) and min(fitted) >= 0
    from_outputs = tmp_path / "stored.tsv"
    direct = tmp_path / "direct.tsv"
    w_stored = certify_scheme_from_outputs(stored, scheme, SETTINGS, ALPHA, SIGMA, from_outputs, fitted)
    w_direct = certify_scheme_direct(
        members, KEYS, dataset, IMAGES, scheme, SETTINGS, num_classes=3, sigma=SIGMA, n0=N0, n=N, alpha=ALPHA,
        batch_size=BATCH, noise_seed=SEED, out_tsv=direct, fitted_weights=fitted, log=lambda m: None,
    )
    rows = lambda p: [line.split("\t")[:5] for line in p.read_text().splitlines()]  # noqa: E731 (no time column)
    assert rows(from_outputs) == rows(direct)
    assert len(rows(direct)) == 1 + len(IMAGES)
    assert torch.allclose(torch.tensor(w_stored), torch.tensor(w_direct), atol=1e-5)
    if scheme.per_point:
        assert len({tuple(round(v, 6) for v in w) for w in w_stored}) > 1  # weights vary per query point


def test_paper_and_predicted_protocols_differ_only_by_the_reference_label(stored, tmp_path):
    """'paper' weights use the true label, 'predicted' the selected class: where the ensemble
    selects the true class both give the same weights."""
    paper = certify_scheme_from_outputs(stored, get_scheme("optimal-paper"), SETTINGS, ALPHA, SIGMA, tmp_path / "a")
    predicted = certify_scheme_from_outputs(stored, get_scheme("optimal-predicted"), SETTINGS, ALPHA, SIGMA, tmp_path / "b")
    labels = [int(line.split("\t")[1]) for line in (tmp_path / "b").read_text().splitlines()[1:]]
    agreeing = 0
    for pos, label in enumerate(labels):
        selection = torch.stack([o["selection"][pos] for o in stored])
        if int(torch.bincount(soft_rule(selection), minlength=3).argmax()) == label:
            agreeing += 1
            assert torch.allclose(torch.tensor(paper[pos]), torch.tensor(predicted[pos]))
    assert agreeing > 0


def test_fitted_scheme_without_weights_is_refused(stored, tmp_path):
    with pytest.raises(ValueError, match="held-out"):
        certify_scheme_from_outputs(stored, get_scheme("sween"), SETTINGS, ALPHA, SIGMA, tmp_path / "x.tsv")
    assert not (tmp_path / "x.tsv").exists()
