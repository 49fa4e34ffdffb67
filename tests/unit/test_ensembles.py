"""Ensembles: shared-noise member outputs, aggregation rules, certification from stored outputs.

The reference for every reduction is direct evaluation: ``Smooth`` on the ensemble (or on a
single member) with the same noise seed and image index, i.e. on the very same noisy inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rslib.certification.tsv import HEADER
from rslib.ensembles.rules import RULES, EnsembleClassifier, get_rule
from rslib.ensembles.certify import certify_ensemble, certify_from_outputs
from rslib.ensembles.outputs import compute_member_outputs, load_outputs, member_logits, save_outputs
from rslib.certification.noise import NoiseStream
from rslib.certification.smooth import Smooth
from tiny_models import OutOfMemoryAbove, cudnn_workspace_error, tiny_model

SIGMA = 0.25
ALPHA = 0.001
N0, N = 100, 300
BATCH = 150  # rounded down to one 100-sample block: exercises the batch/block alignment
SEED = 7
IMAGES = [0, 3, 5, 8]

#: every registered rule, with parameters where it has some; SWEEN's exit is made permissive
#: so that, on these 3-member ensembles, early exits actually change decisions
RULE_SPECS = {name: {} for name in RULES} | {
    "k_consensus": {"k": 2},
    "sween_adaptive": {"threshold": 0.5, "alpha": 0.99},
}


@pytest.fixture(scope="module")
def dataset():
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 4, 4, generator=g), int(k % 3)) for k in range(10)]


@pytest.fixture(scope="module")
def members():
    return [tiny_model(s) for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def outputs32(members, dataset):
    return [
        compute_member_outputs(m, dataset, IMAGES, N0, N, BATCH, SEED, SIGMA, "cpu", dtype=torch.float32)
        for m in members
    ]


def stacked(outputs, pos):
    return (
        torch.stack([o["selection"][pos] for o in outputs]),
        torch.stack([o["estimation"][pos] for o in outputs]),
    )


# -- 1. member outputs see exactly Smooth's noise ----------------------------------------------
@pytest.mark.parametrize("phase,num", [("selection", N0), ("estimation", N)])
def test_member_logits_counts_equal_sample_counts(members, dataset, phase, num):
    model = members[0]
    smooth = Smooth(model, 3, SIGMA, noise_seed=SEED, device="cpu")
    for i in IMAGES:
        x, _ = dataset[i]
        z = member_logits(model, x, num, BATCH, NoiseStream(SEED), SIGMA, i, phase)
        assert z.shape == (num, 3) and z.dtype == torch.float32
        expected = smooth.sample_counts(x, num, BATCH, i, phase)
        assert torch.equal(torch.bincount(z.argmax(1), minlength=3), expected)
        # the batch size must not matter (whole noise blocks)
        z_big = member_logits(model, x, num, 1000, NoiseStream(SEED), SIGMA, i, phase)
        assert torch.equal(z, z_big)


def test_member_outputs_back_off_when_the_device_runs_out_of_memory(members, dataset):
    """1000 samples per batch fail above 200 (here as cuDNN's allocation failure): the estimation
    phase of the first image is halved to 500, then 200, one log line each, and later images
    keep 200; the stored logits and counts equal those of a run at 100 from the start."""
    lines = []
    failing = OutOfMemoryAbove(members[0], limit=200, error=cudnn_workspace_error)
    out = compute_member_outputs(failing, dataset, IMAGES, N0, N, 1000, SEED, SIGMA, log=lines.append)
    reference = compute_member_outputs(members[0], dataset, IMAGES, N0, N, BATCH, SEED, SIGMA)
    for key in ("selection", "estimation", "selection_counts", "estimation_counts"):
        assert torch.equal(out[key], reference[key]), key
    assert lines == [
        f"out of memory on cpu at {a} noisy samples per batch: continuing with {b} "
        "(the same noise samples: the stored outputs do not change)" for a, b in ((1000, 500), (500, 200))
    ]
    assert max(failing.batches) == 200


def test_member_outputs_raise_other_errors_and_at_one_block(members, dataset):
    with pytest.raises(RuntimeError, match="CUDNN_STATUS_ALLOC_FAILED"):
        compute_member_outputs(OutOfMemoryAbove(members[0], limit=50, error=cudnn_workspace_error),
                               dataset, IMAGES, N0, N, 1000, SEED, SIGMA, log=lambda line: None)
    fault = OutOfMemoryAbove(members[0], limit=200, error=lambda size: RuntimeError("CUDA error: misaligned address"))
    lines = []
    with pytest.raises(RuntimeError, match="misaligned address"):
        compute_member_outputs(fault, dataset, IMAGES, N0, N, 1000, SEED, SIGMA, log=lines.append)
    assert lines == []


def test_compute_member_outputs_layout_float32_exact_and_float16(members, dataset):
    out = compute_member_outputs(members[1], dataset, IMAGES, N0, N, BATCH, SEED, SIGMA)
    half = compute_member_outputs(members[1], dataset, IMAGES, N0, N, BATCH, SEED, SIGMA, dtype=torch.float16)
    assert out["selection"].shape == (len(IMAGES), N0, 3) and out["selection"].dtype == torch.float32
    assert out["estimation"].shape == (len(IMAGES), N, 3) and out["estimation"].dtype == torch.float32
    assert half["estimation"].dtype == torch.float16
    assert out["indices"].tolist() == IMAGES
    assert out["labels"].tolist() == [dataset[i][1] for i in IMAGES]
    assert (out["noise_seed"], out["sigma"]) == (SEED, SIGMA)
    smooth = Smooth(members[1], 3, SIGMA, noise_seed=SEED, device="cpu")
    flipped = total = 0
    for pos, i in enumerate(IMAGES):
        x, _ = dataset[i]
        for phase, num in (("selection", N0), ("estimation", N)):
            z32 = member_logits(members[1], x, num, BATCH, NoiseStream(SEED), SIGMA, i, phase)
            expected = smooth.sample_counts(x, num, BATCH, i, phase)
            # the default float32 storage is exactly the logits: the counts are Smooth's
            assert torch.equal(out[phase][pos], z32)
            assert torch.equal(torch.bincount(out[phase][pos].argmax(1), minlength=3), expected)
            # float16 storage is exactly float32 logits rounded to nearest
            assert torch.equal(half[phase][pos], z32.half())
            counts = torch.bincount(half[phase][pos].float().argmax(1), minlength=3)
            flipped += int((counts - expected).abs().sum()) // 2
            total += num
    # rounding flips the argmax of near-ties only: a tiny fraction of samples
    assert flipped <= 0.01 * total


# -- 2. rules on hand-computed cases ------------------------------------------------------------
# A is very confident in class 0, B and C moderately confident in class 1.
A, B, C = [12.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]


def logits_of(*members):
    return torch.tensor(members, dtype=torch.float32).unsqueeze(1)  # [members, 1 sample, 3]


def decide(name, z, weights=None, **params):
    return int(get_rule(name, **params)(z, weights)[0])


def test_soft_and_logit_disagree():
    z = logits_of(A, B, C)
    # logit sum: [12, 10, 0] -> 0; softmax sum: [≈1.013, ≈1.973, ≈0.013] -> 1
    assert decide("logit", z) == 0
    assert decide("soft", z) == 1
    assert decide("vote", z) == 1


def test_mme_follows_the_most_confident_minority_member():
    z = logits_of(A, B, C)
    # margins: A ≈ 0.9998, B = C ≈ 0.980 -> A decides although it is outvoted 2:1
    assert decide("mme", z) == 0
    # equal margins: the lowest member index decides
    assert decide("mme", logits_of([0.0, 3.0, 0.0], [0.0, 0.0, 3.0])) == 1
    # margin, not top probability: X = (0.5, 0.48, 0.02) has the larger top-1 but margin 0.02;
    # Y = (0.3, 0.3, 0.4) has margin 0.1 and decides
    assert decide("mme", logits_of(probs(0.5, 0.48, 0.02), probs(0.3, 0.3, 0.4))) == 2


def test_vote_tie_goes_to_lowest_class():
    assert decide("vote", logits_of([0.0, 0.0, 1.0], [0.0, 1.0, 0.0])) == 1
    assert decide("vote", logits_of([0.0, 0.0, 1.0], [0.0, 1.0, 0.0]), torch.tensor([1.0, 2.0])) == 1
    assert decide("vote", logits_of([0.0, 0.0, 1.0], [0.0, 1.0, 0.0]), torch.tensor([2.0, 1.0])) == 2


def test_k_consensus_agreement_and_fallback():
    # first two (B, C) agree on 1: returned although the logit average of all is 0
    assert decide("k_consensus", logits_of(B, C, A), k=2) == 1
    assert decide("logit", logits_of(B, C, A)) == 0
    # first two (A, B) disagree: fall back to the logit average of all three -> 0 (soft says 1)
    assert decide("k_consensus", logits_of(A, B, C), k=2) == 0
    # all three must agree for k=3: they do not -> logit average
    assert decide("k_consensus", logits_of(B, C, A), k=3) == 0
    with pytest.raises(ValueError):
        decide("k_consensus", logits_of(A, B), k=0)


def probs(*p):
    """Logits whose softmax is p (zero probability -> very negative logit)."""
    return [math.log(v) if v > 0 else -100.0 for v in p]


def test_sween_adaptive_exits_early():
    # i = 1: the largest-weight member (index 1) has p = 0.9999 > T = 0.999 -> its class,
    # although the weighted soft average prefers class 0 (0.6 vs 0.4)
    z = logits_of(probs(0.9999, 0.0001, 0), probs(0.0001, 0.9999, 0), probs(0.9999, 0.0001, 0))
    w = torch.tensor([0.3, 0.4, 0.3])
    assert decide("sween_adaptive", z, w) == 1
    assert decide("soft", z, w) == 0
    # i = 2: two identical members at p̄ = 0.6 with zero spread exit with class 0; the third
    # (smallest weight) would have flipped the full average to class 1 (0.42 vs 0.58)
    z = logits_of(probs(0.6, 0.4, 0), probs(0.6, 0.4, 0), probs(0, 1, 0))
    w = torch.tensor([0.35, 0.35, 0.3])
    assert decide("sween_adaptive", z, w) == 0
    assert decide("soft", z, w) == 1
    # i = 2 with spread: p̄ = 0.6, ŵ = (½, ½), weighted sd = 0.3, sqrt(Σŵ²) = √½, so the exit needs
    # 0.6 > 0.5 + z·0.7071·0.3: with z = 1.96 (α = 0.05) no exit, the full average gives class 1
    z = logits_of(probs(0.9, 0.1, 0), probs(0.3, 0.7, 0), probs(0, 1, 0))
    assert decide("sween_adaptive", z, w) == 1
    # exit iff z < 0.1 / 0.2121 = 0.4714, i.e. α > 2·(1 − Φ(0.4714)) = 0.6374
    assert decide("sween_adaptive", z, w, alpha=0.66) == 0  # z = Φ⁻¹(0.67) ≈ 0.440: exit at i = 2
    assert decide("sween_adaptive", z, w, alpha=0.62) == 1  # z = Φ⁻¹(0.69) ≈ 0.496: no exit


def _sween_exit_by_hand(p, w, threshold, alpha):
    """The SWEEN authors' AEnsemble exit rule written out member by member (model/ensemble.py):
    visit members by decreasing weight; after the first, exit if max p̄ > T; after i ≥ 2, exit if
    p̄_L > 0.5 + z·sqrt(Σŵ²)·sqrt(Σŵ(π − p̄_L)²) with ŵ = w/Σw over the visited members."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    order = sorted(range(len(w)), key=lambda j: -w[j])
    for i in range(1, len(order) + 1):
        seen = order[:i]
        total = sum(w[j] for j in seen)
        hat = [w[j] / total for j in seen]
        mean = [sum(h * p[j][c] for h, j in zip(hat, seen)) for c in range(len(p[0]))]
        top = max(range(len(mean)), key=lambda c: mean[c])
        if i == len(order):
            return top
        if i == 1 and mean[top] > threshold:
            return top
        if i >= 2:
            spread = math.sqrt(sum(h * (p[j][top] - mean[top]) ** 2 for h, j in zip(hat, seen)))
            if mean[top] > 0.5 + z * math.sqrt(sum(h * h for h in hat)) * spread:
                return top
    raise AssertionError("unreachable")


def test_sween_adaptive_rule_is_the_authors_formula():
    g = torch.Generator().manual_seed(11)
    for trial in range(200):
        k = 2 + trial % 5
        logits = torch.randn(k, 1, 4, generator=g) * (0.5 + 3 * torch.rand(1, generator=g))
        w = torch.rand(k, generator=g) + 0.05
        w = w / w.sum()
        alpha = [0.05, 0.3, 0.7][trial % 3]
        threshold = [0.999, 0.9, 0.6][trial % 3]
        p = logits[:, 0].softmax(dim=1).double().tolist()
        expected = _sween_exit_by_hand(p, w.double().tolist(), threshold, alpha)
        got = RULES["sween_adaptive"](logits, w, threshold=threshold, alpha=alpha).item()
        assert got == expected, (trial, p, w.tolist())


def test_weights_one_zero_select_the_first_member():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 200, 3, generator=g) * 3
    first = z[0].argmax(1)
    assert not torch.equal(first, z[1].argmax(1))
    for name, params in RULE_SPECS.items():
        got = get_rule(name, **params)(z, torch.tensor([1.0, 0.0]))
        assert torch.equal(got, first), name


@pytest.mark.parametrize("name", list(RULE_SPECS))
def test_zero_weight_member_is_left_out(name):
    """A member with weight 0 changes nothing: same decisions as the sub-ensemble without it."""
    rule = get_rule(name, **RULE_SPECS[name])
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4, 300, 3, generator=g) * 2
    w = torch.tensor([0.3, 0.0, 0.45, 0.25])
    keep = [0, 2, 3]
    assert torch.equal(rule(z, w), rule(z[keep], w[keep])), name
    # hand case for k-consensus: the zero-weight A must not break the B, C consensus on 1
    # (counting A, the first two disagree and the logit average of B, C, A2 says 0)
    z = logits_of(B, A, C, A)
    assert decide("k_consensus", z, torch.tensor([1.0, 0.0, 1.0, 1.0]), k=2) == 1
    assert decide("logit", z, torch.tensor([1.0, 0.0, 1.0, 1.0])) == 0


def test_rules_take_float16_and_reject_bad_input():
    z = logits_of(A, B, C)
    for name, params in RULE_SPECS.items():
        assert torch.equal(get_rule(name, **params)(z.half(), None), get_rule(name, **params)(z, None)), name
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        get_rule("median")
    with pytest.raises(ValueError, match="weights"):
        get_rule("soft")(z, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        get_rule("soft")(z, torch.tensor([1.0, -1.0, 1.0]))


# -- 3. certification: reduction over stored outputs == direct evaluation -----------------------
def test_identical_members_certify_like_the_single_member(members, dataset):
    model = members[0]
    single = compute_member_outputs(model, dataset, IMAGES, N0, N, BATCH, SEED, SIGMA)
    smooth = Smooth(model, 3, SIGMA, noise_seed=SEED, device="cpu")
    certified = 0
    for pos, i in enumerate(IMAGES):
        x, _ = dataset[i]
        expected = smooth.certify(x, N0, N, ALPHA, BATCH, index=i)
        certified += expected[0] != Smooth.ABSTAIN
        sel, est = stacked([single] * 3, pos)
        for name, params in RULE_SPECS.items():
            got = certify_from_outputs(sel, est, get_rule(name, **params), None, ALPHA, SIGMA)
            assert got == expected, (name, i)
    assert certified > 0  # the comparison covers radii, not only abstentions


@pytest.mark.parametrize("name", list(RULE_SPECS))
def test_stored_outputs_equal_direct_evaluation(members, dataset, outputs32, name):
    params = RULE_SPECS[name]
    weights = torch.tensor([0.4, 0.35, 0.25])
    ensemble = EnsembleClassifier(members, name, weights, **params)
    smooth = Smooth(ensemble, 3, SIGMA, noise_seed=SEED, device="cpu")
    rule = get_rule(name, **params)
    certified = differs_from_first = differs_from_soft = 0
    for pos, i in enumerate(IMAGES):
        x, _ = dataset[i]
        sel, est = stacked(outputs32, pos)
        got = certify_from_outputs(sel, est, rule, weights, ALPHA, SIGMA)
        assert got == smooth.certify(x, N0, N, ALPHA, BATCH, index=i), i
        certified += got[0] != Smooth.ABSTAIN
        # non-trivial: the ensemble is not just its first member, nor just the soft rule
        decisions = rule(est, weights)
        differs_from_first += int((decisions != est[0].argmax(1)).sum())
        differs_from_soft += int((decisions != get_rule("soft")(est, weights)).sum())
    assert certified > 0
    assert differs_from_first > 0
    assert differs_from_soft > 0 or name == "soft"


def test_weights_one_zero_certify_like_member_one(members, dataset, outputs32):
    smooth = Smooth(members[0], 3, SIGMA, noise_seed=SEED, device="cpu")
    for pos, i in enumerate(IMAGES):
        x, _ = dataset[i]
        sel, est = stacked(outputs32[:2], pos)
        expected = smooth.certify(x, N0, N, ALPHA, BATCH, index=i)
        assert certify_from_outputs(sel, est, "soft", torch.tensor([1.0, 0.0]), ALPHA, SIGMA) == expected


@pytest.mark.parametrize("name,which", [("soft", [1]), ("mme", [0, 1, 2])])
def test_float16_outputs_equal_direct_evaluation_of_rounded_members(members, dataset, name, which):
    """Float16 storage certifies the ensemble of float16-rounded members, exactly. (Member 1
    alone has a float16 argmax flip on image 3, which changes its certified radius.)"""
    chosen = [members[m] for m in which]
    outputs16 = [compute_member_outputs(m, dataset, IMAGES, N0, N, BATCH, SEED, SIGMA, dtype=torch.float16)
                 for m in chosen]
    ensemble = EnsembleClassifier(chosen, name, None, output_dtype=torch.float16)
    smooth = Smooth(ensemble, 3, SIGMA, noise_seed=SEED, device="cpu")
    for pos, i in enumerate(IMAGES):
        x, _ = dataset[i]
        got = certify_from_outputs(*stacked(outputs16, pos), name, None, ALPHA, SIGMA)
        assert got == smooth.certify(x, N0, N, ALPHA, BATCH, index=i), i


# -- 4. storage and TSV -------------------------------------------------------------------------
def test_save_load_round_trip_and_tsv(tmp_path, members, dataset, outputs32):
    outputs16 = compute_member_outputs(members[2], dataset, IMAGES, N0, N, BATCH, SEED, SIGMA, dtype=torch.float16)
    path = tmp_path / "out" / "member2.npz"
    save_outputs(path, outputs16)
    assert [p.name for p in path.parent.iterdir()] == ["member2.npz"]  # no temporary left behind
    loaded = load_outputs(path)
    assert loaded["selection"].dtype == torch.float16
    for key in ("selection", "estimation", "indices", "labels"):
        assert torch.equal(loaded[key], outputs16[key]), key
    assert loaded["noise_seed"] == SEED and loaded["sigma"] == SIGMA

    ensemble = outputs32[:2] + [loaded]
    tsv = tmp_path / "ens.tsv"
    certify_ensemble(ensemble, "soft", None, ALPHA, SIGMA, tsv, log=lambda m: None)
    lines = tsv.read_text().splitlines(keepends=True)
    assert lines[0] == HEADER and len(lines) == 1 + len(IMAGES)
    for pos, line in enumerate(lines[1:]):
        idx, label, predict, radius, correct, elapsed = line.rstrip("\n").split("\t")
        expected = certify_from_outputs(*stacked(ensemble, pos), "soft", None, ALPHA, SIGMA)
        assert (int(idx), int(label)) == (IMAGES[pos], dataset[IMAGES[pos]][1])
        assert (int(predict), float(radius)) == expected
        assert int(correct) == int(expected[0] == int(label))
        assert float(elapsed) >= 0


def test_incompatible_member_outputs_are_refused(tmp_path, members, dataset, outputs32):
    other_seed = compute_member_outputs(members[0], dataset, IMAGES, N0, N, BATCH, SEED + 1, SIGMA)
    with pytest.raises(ValueError, match="noise_seed"):
        certify_ensemble([outputs32[0], other_seed], "soft", None, ALPHA, SIGMA, tmp_path / "x.tsv")
    with pytest.raises(ValueError, match="sigma"):
        certify_ensemble(outputs32, "soft", None, ALPHA, 0.5, tmp_path / "x.tsv")
    assert not (tmp_path / "x.tsv").exists()
    np.savez(tmp_path / "bad.npz", selection=np.zeros(1))
    with pytest.raises(ValueError, match="not a member-output file"):
        load_outputs(tmp_path / "bad.npz")
