"""Tests for rslib.certification.smooth (PREDICT/CERTIFY, confidence bounds) and rslib.certification.certify (shards, TSVs).

The central test is a statistical soundness check against a base classifier whose smoothed
classifier is known in closed form: for the linear 2-class classifier f(x) = [0, w·x + b],
P(f(x + ε) = 1) = Φ((w·x + b) / (σ‖w‖)) and the smoothed classifier's decision boundary is the
hyperplane w·x + b = 0, so its true robust radius at x is |w·x + b| / ‖w‖.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from rslib.certification.certify import certify_images, merge_shards, shard_ranges
from rslib.certification.noise import NoiseStream
from rslib.certification.bounds import certified_radius, lower_confidence_bound, max_certifiable_radius
from rslib.certification.smooth import Smooth
from rslib.certification.tsv import HEADER
from rslib.runtime.errors import CertificateError
from tiny_models import OutOfMemoryAbove, caching_allocator_error, cudnn_workspace_error


# --- the closed-form linear model ---------------------------------------------------------------

D = 4
W = torch.tensor([1.0, -2.0, 0.5, 2.0], dtype=torch.float64)
B = 0.3
W_NORM = float(W.norm())
SIGMA = 0.5


def linear_base(w: torch.Tensor = W, b: float = B) -> nn.Module:
    """Logits [0, w·x + b] for inputs of shape (N, 1, 1, d): class 1 iff w·x + b > 0."""
    lin = nn.Linear(len(w), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros_like(w), w]).float())
        lin.bias.copy_(torch.tensor([0.0, b]))
    return nn.Sequential(nn.Flatten(), lin)


def point_with_p1(p: float, sigma: float = SIGMA) -> tuple[torch.Tensor, float]:
    """A (1, 1, D) input with P(class 1 under noise) = p, and its signed margin w·x + b."""
    margin = sigma * W_NORM * float(norm.ppf(p))
    t = (margin - B) / W_NORM
    x = (t * W / W_NORM).float().view(1, 1, D)
    return x, margin


def point_at_margin(margin: float) -> torch.Tensor:
    t = (margin - B) / W_NORM
    return (t * W / W_NORM).float().view(1, 1, D)


class ConstantClass(nn.Module):
    """Always predicts ``cls`` (with a parameter so Smooth can infer the device)."""

    def __init__(self, cls: int, num_classes: int):
        super().__init__()
        self.cls = cls
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.num_classes) + 0 * self.dummy
        logits[:, self.cls] = 1.0
        return logits


def uniform_three_class() -> nn.Module:
    """On x = 0 of shape (1, 1, 3): argmax of 3 i.i.d. normals, i.e. a uniformly random class."""
    return nn.Flatten()  # logits are the (noisy) input itself


def binom_upper(trials: int, alpha: float, q: float = 0.999) -> int:
    return int(binom.ppf(q, trials, alpha))


# --- lower_confidence_bound / certified_radius / max_certifiable_radius -----------------------


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_confidence_bound_matches_clopper_pearson(n, alpha):
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
    previous = -1.0
    for k in ks:
        lcb = lower_confidence_bound(k, n, alpha)
        if k == 0:
            assert lcb == 0.0
        else:
            assert lcb == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12, abs=1e-15)
            # defining property of the exact bound: P(Bin(n, p_L) >= k) = alpha
            assert binom.sf(k - 1, n, lcb) == pytest.approx(alpha, rel=1e-6)
        assert 0.0 <= lcb <= k / n
        assert lcb >= previous  # monotone in k
        previous = lcb
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-12)


def test_lower_confidence_bound_is_lower_for_smaller_alpha():
    assert lower_confidence_bound(80, 100, 0.001) < lower_confidence_bound(80, 100, 0.05) < 0.8


@pytest.mark.parametrize("k, n", [(11, 10), (-1, 10), (1, 0)])
def test_lower_confidence_bound_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        lower_confidence_bound(k, n, 0.05)


def test_certified_radius_closed_form():
    assert certified_radius(0.5, 0.25) == 0.0
    assert certified_radius(float(norm.cdf(1.5)), 0.5) == pytest.approx(0.75, rel=1e-12)
    assert certified_radius(0.975, 1.0) == pytest.approx(1.959963985, rel=1e-9)
    assert certified_radius(0.4, 1.0) < 0  # caller must check p >= 0.5


def test_max_certifiable_radius():
    # SPEC: about 3.81 sigma at n = 100,000 and alpha = 0.001
    assert round(max_certifiable_radius(100_000, 0.001, 1.0), 2) == 3.81
    assert max_certifiable_radius(100_000, 0.001, 0.5) == pytest.approx(
        0.5 * max_certifiable_radius(100_000, 0.001, 1.0), rel=1e-12
    )
    # it is the radius of a unanimous vote
    for n, alpha in [(500, 0.05), (10_000, 0.001)]:
        assert max_certifiable_radius(n, alpha, 0.25) == pytest.approx(
            certified_radius(lower_confidence_bound(n, n, alpha), 0.25), rel=1e-12
        )


# --- sample_counts ---------------------------------------------------------------------------


def test_sample_counts_of_constant_classifier():
    smooth = Smooth(ConstantClass(2, 5), num_classes=5, sigma=0.25, noise_seed=0)
    counts = smooth.sample_counts(torch.zeros(1, 3, 3), 250, 100, index=0, phase="estimation")
    assert counts.dtype == torch.int64
    assert counts.device.type == "cpu"
    assert counts.tolist() == [0, 0, 250, 0, 0]
    assert int(counts.sum()) == 250


@pytest.mark.parametrize("phase", ["selection", "estimation", "predict"])
def test_sample_counts_equal_reference_from_noise_stream(phase):
    # counts are the bincount of f(x + sigma * noise) with the documented noise stream
    base = linear_base()
    x, _ = point_with_p1(0.7)
    n, index, seed = 730, 17, 99
    noise = NoiseStream(seed).sample(index, phase, 0, n, x.shape)
    with torch.no_grad():
        ref = torch.bincount(base(x.unsqueeze(0) + SIGMA * noise).argmax(1), minlength=2)
    smooth = Smooth(base, 2, SIGMA, noise_seed=seed, device="cpu")
    for batch in (100, 250, 1000):
        counts = smooth.sample_counts(x, n, batch, index=index, phase=phase)
        assert counts.tolist() == ref.tolist()
        assert int(counts.sum()) == n


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_smoothed_probability_matches_closed_form(p):
    # validates both the reference formula used below and Smooth's noise scaling by sigma
    x, _ = point_with_p1(p)
    n = 20_000
    counts = Smooth(linear_base(), 2, SIGMA, noise_seed=5, device="cpu").sample_counts(x, n, 5000, 0, "predict")
    freq = int(counts[1]) / n
    assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_sigma_must_be_positive():
    with pytest.raises(ValueError):
        Smooth(linear_base(), 2, 0.0)
    with pytest.raises(ValueError):
        Smooth(linear_base(), 2, -0.25)


# --- CERTIFY: statistical soundness -------------------------------------------------------------

ALPHA = 0.05
N0, N = 100, 500
TRIALS = 400
# P(class 1) at each test point; 0.5 is on the boundary (true radius 0), 0.2 is on the class-0 side
SOUNDNESS_PS = [0.5, 0.6, 0.75, 0.9, 0.99, 0.2]


def _true_class_and_radius(margin: float) -> tuple[int | None, float]:
    if abs(margin) < 1e-12:
        return None, 0.0  # on the boundary: g is undefined at x, no radius can be certified
    return (1 if margin > 0 else 0), abs(margin) / W_NORM


def _is_failure(pred: int, radius: float, true_cls: int | None, true_radius: float) -> bool:
    if pred == Smooth.ABSTAIN:
        return False
    return pred != true_cls or radius > true_radius


def _point_estimate_certify(smooth: Smooth, x: torch.Tensor, index: int) -> tuple[int, float]:
    """CERTIFY without the confidence bound: p̂_A = n_A / n in place of p̲_A."""
    c_a = int(smooth.sample_counts(x, N0, 1000, index, "selection").argmax())
    n_a = int(smooth.sample_counts(x, N, 1000, index, "estimation")[c_a])
    p_hat = n_a / N
    if p_hat < 0.5:
        return Smooth.ABSTAIN, 0.0
    return c_a, certified_radius(p_hat, smooth.sigma)


@pytest.fixture(scope="module")
def soundness_runs():
    """For each test point and trial (independent noise seed): certify at ALPHA, certify at
    4·ALPHA, and the point-estimate certifier, all as failure indicators."""
    base = linear_base()
    results = {}
    for p in SOUNDNESS_PS:
        x = point_at_margin(0.0) if p == 0.5 else point_with_p1(p)[0]
        margin = 0.0 if p == 0.5 else point_with_p1(p)[1]
        true_cls, true_radius = _true_class_and_radius(margin)
        fails = {"certify": 0, "certify_4alpha": 0, "point_estimate": 0, "abstain": 0}
        for trial in range(TRIALS):
            smooth = Smooth(base, 2, SIGMA, noise_seed=10_000 + trial, device="cpu")
            pred, radius = smooth.certify(x, N0, N, ALPHA, 1000, index=0)
            fails["certify"] += _is_failure(pred, radius, true_cls, true_radius)
            fails["abstain"] += pred == Smooth.ABSTAIN
            pred4, radius4 = smooth.certify(x, N0, N, 4 * ALPHA, 1000, index=0)
            fails["certify_4alpha"] += _is_failure(pred4, radius4, true_cls, true_radius)
            fails["point_estimate"] += _is_failure(*_point_estimate_certify(smooth, x, 0), true_cls, true_radius)
        results[p] = fails
    return results


def test_linear_model_reference_is_consistent():
    # the test point construction itself: margin and radius as designed
    for p in SOUNDNESS_PS[1:]:
        x, margin = point_with_p1(p)
        assert float(x.double().flatten() @ W + B) == pytest.approx(margin, abs=1e-6)
        assert abs(margin) / W_NORM == pytest.approx(SIGMA * abs(norm.ppf(p)), rel=1e-9)
    assert float(point_at_margin(0.0).double().flatten() @ W + B) == pytest.approx(0.0, abs=1e-6)


def test_certify_failure_rate_is_at_most_alpha(soundness_runs):
    # Cohen et al. Prop. 2: each trial fails (wrong class, or radius beyond the true robust
    # radius) with probability <= alpha, so failures are stochastically <= Binomial(trials, alpha).
    for p, fails in soundness_runs.items():
        assert fails["certify"] <= binom_upper(TRIALS, ALPHA), (p, fails)
    total = sum(f["certify"] for f in soundness_runs.values())
    assert total <= binom_upper(TRIALS * len(SOUNDNESS_PS), ALPHA), soundness_runs


def test_soundness_check_has_power_against_missing_confidence_bound(soundness_runs):
    # the same count with p̂ = n_A / n in place of the lower bound fails far more often
    bound = binom_upper(TRIALS, ALPHA)
    for p, fails in soundness_runs.items():
        assert fails["point_estimate"] > bound, (p, fails)
    total = sum(f["point_estimate"] for f in soundness_runs.values())
    assert total > 5 * binom_upper(TRIALS * len(SOUNDNESS_PS), ALPHA), soundness_runs


def test_soundness_check_resolves_a_miscalibrated_level(soundness_runs):
    # a certifier that (e.g. by a one-/two-sided mix-up) effectively used 4·alpha is caught
    # by the pooled count, even though each trial then fails only with probability <= 4·alpha
    total = sum(f["certify_4alpha"] for f in soundness_runs.values())
    assert total > binom_upper(TRIALS * len(SOUNDNESS_PS), ALPHA), soundness_runs


def test_certify_mostly_abstains_on_the_boundary_and_rarely_elsewhere(soundness_runs):
    # on the boundary a non-abstention needs p̲_A >= 0.5 with p_A = 0.5: probability <= alpha
    assert TRIALS - soundness_runs[0.5]["abstain"] <= binom_upper(TRIALS, ALPHA)
    # at p_A = 0.99, n = 500, p̲_A >= 0.5 essentially always
    assert soundness_runs[0.99]["abstain"] == 0


# --- CERTIFY: values ------------------------------------------------------------------------------


def test_certify_confident_point_returns_the_max_radius():
    smooth = Smooth(linear_base(), 2, SIGMA, noise_seed=3, device="cpu")
    for margin, cls in [(12 * SIGMA * W_NORM, 1), (-12 * SIGMA * W_NORM, 0)]:
        pred, radius = smooth.certify(point_at_margin(margin), N0, N, ALPHA, 1000, index=4)
        assert pred == cls
        assert isinstance(radius, float)
        # unanimous vote (p_A ~ 1 - 1e-33): exactly the largest certifiable radius
        assert radius == pytest.approx(max_certifiable_radius(N, ALPHA, SIGMA), rel=1e-12)
        assert 0 < radius <= max_certifiable_radius(N, ALPHA, SIGMA)


def test_certify_radius_is_within_bounds_for_a_likely_point():
    x, margin = point_with_p1(0.9)
    for seed in range(10):
        pred, radius = Smooth(linear_base(), 2, SIGMA, noise_seed=seed, device="cpu").certify(
            x, N0, N, ALPHA, 1000, index=0
        )
        assert pred == 1
        assert 0 < radius <= max_certifiable_radius(N, ALPHA, SIGMA)


def test_certify_abstains_with_zero_radius_when_p_a_is_low():
    x = torch.zeros(1, 1, 3)
    for seed in range(5):
        smooth = Smooth(uniform_three_class(), 3, 1.0, noise_seed=seed, device="cpu")
        counts = smooth.sample_counts(x, 600, 600, 0, "estimation")
        assert all(abs(int(c) - 200) < 5 * math.sqrt(600 * 2 / 9) for c in counts)  # uniform
        pred, radius = smooth.certify(x, N0, N, ALPHA, 1000, index=seed)
        assert pred == Smooth.ABSTAIN == -1
        assert radius == 0.0 and isinstance(radius, float)


def test_certify_uses_selection_then_independent_estimation_counts():
    smooth = Smooth(linear_base(), 2, SIGMA, noise_seed=21, device="cpu")
    x, _ = point_with_p1(0.8)
    for index in range(5):
        selection = smooth.sample_counts(x, N0, 1000, index, "selection")
        estimation = smooth.sample_counts(x, N, 1000, index, "estimation")
        c_a = int(selection.argmax())
        lcb = lower_confidence_bound(int(estimation[c_a]), N, ALPHA)
        expected = (c_a, certified_radius(lcb, SIGMA)) if lcb >= 0.5 else (Smooth.ABSTAIN, 0.0)
        assert smooth.certify(x, N0, N, ALPHA, 1000, index=index) == expected


def test_certify_is_batch_size_invariant_and_index_dependent():
    x, _ = point_with_p1(0.8)
    n = 1050  # not a multiple of any batch size below

    def run(batch, index=7):
        return Smooth(linear_base(), 2, SIGMA, noise_seed=42, device="cpu").certify(x, N0, n, ALPHA, batch, index=index)

    reference = run(100)
    assert reference[0] == 1
    for batch in (300, 350, 1000, 5000):  # 350 is rounded down to 300
        assert run(batch) == reference, batch
    others = {run(1000, index=i) for i in range(8, 14)}
    assert others != {reference}  # other images get other noise


def test_predict_is_batch_size_invariant():
    x, _ = point_with_p1(0.52)  # close enough to the boundary that abstentions depend on the noise
    for index in range(6):
        results = {
            Smooth(linear_base(), 2, SIGMA, noise_seed=1, device="cpu").predict(x, 1000, ALPHA, b, index=index)
            for b in (100, 300, 350, 1000)
        }
        assert len(results) == 1, (index, results)


@pytest.mark.parametrize("error", [caching_allocator_error, cudnn_workspace_error])
def test_out_of_memory_halves_the_batch_and_keeps_the_certificate(error):
    """1000 samples per batch fail above 300: halved to 500, then 200 (whole blocks of 100), one log
    line each; the counts and certificates equal a run at 200 from the start, and later calls
    keep 200 without failing again. cuDNN's allocation failure counts as running out of memory."""
    x, _ = point_with_p1(0.8)
    lines = []
    model = OutOfMemoryAbove(linear_base(), limit=300, error=error)
    smooth = Smooth(model, 2, SIGMA, noise_seed=5, device="cpu", log=lines.append)
    reference = Smooth(linear_base(), 2, SIGMA, noise_seed=5, device="cpu")
    got = [smooth.certify(x, N0, 1050, ALPHA, 1000, index=i) for i in range(3)]
    assert got == [reference.certify(x, N0, 1050, ALPHA, 200, index=i) for i in range(3)]
    assert lines == [
        "out of memory on cpu at 1000 noisy samples per batch: continuing with 500 (the same noise samples: "
        "the certificate does not change)",
        "out of memory on cpu at 500 noisy samples per batch: continuing with 200 (the same noise samples: "
        "the certificate does not change)",
    ]
    assert set(model.batches) == {100, 200, 50}  # n0 = one block; 1050 = 5 x 200 + 50
    assert smooth.batch_limit == 200
    counts = smooth.sample_counts(x, 1050, 1000, 9, "estimation")
    assert torch.equal(counts, reference.sample_counts(x, 1050, 200, 9, "estimation"))
    assert len(lines) == 2


def test_out_of_memory_after_some_batches_resumes_at_the_failed_batch():
    """A failure in the middle of a phase keeps the counts of the batches before it: each sample
    is classified exactly once."""
    x, _ = point_with_p1(0.6)

    class FailsOnce(nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.calls, self.samples = linear_base(), 0, 0

        def forward(self, inputs):
            self.calls += 1
            if self.calls == 3:
                raise torch.OutOfMemoryError("CUDA out of memory.")
            self.samples += len(inputs)
            return self.base(inputs)

    model = FailsOnce()
    smooth = Smooth(model, 2, SIGMA, noise_seed=3, device="cpu", log=lambda line: None)
    counts = smooth.sample_counts(x, 2000, 400, 4, "estimation")
    assert model.samples == 2000 and int(counts.sum()) == 2000
    assert torch.equal(counts, Smooth(linear_base(), 2, SIGMA, noise_seed=3).sample_counts(x, 2000, 200, 4, "estimation"))


def test_out_of_memory_at_one_block_is_raised():
    smooth = Smooth(OutOfMemoryAbove(linear_base(), limit=50), 2, SIGMA, device="cpu", log=lambda line: None)
    with pytest.raises(torch.OutOfMemoryError):
        smooth.certify(point_with_p1(0.8)[0], N0, 1000, ALPHA, 1000, index=0)


def test_other_device_errors_are_not_retried():
    """A CUDA fault that is not an allocation failure is raised at once, with no smaller batch."""
    lines = []
    model = OutOfMemoryAbove(linear_base(), limit=300,
                             error=lambda size: RuntimeError("CUDA error: an illegal memory access was encountered"))
    smooth = Smooth(model, 2, SIGMA, device="cpu", log=lines.append)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        smooth.certify(point_with_p1(0.8)[0], N0, 1000, ALPHA, 1000, index=0)
    assert lines == [] and smooth.batch_limit is None


# --- PREDICT ----------------------------------------------------------------------------------


def test_predict_far_points_return_the_right_class():
    for margin, cls in [(6 * SIGMA * W_NORM, 1), (-6 * SIGMA * W_NORM, 0)]:
        x = point_at_margin(margin)
        for seed in range(10):
            smooth = Smooth(linear_base(), 2, SIGMA, noise_seed=seed, device="cpu")
            assert smooth.predict(x, 200, ALPHA, 1000, index=seed) == cls


def test_predict_abstains_on_the_boundary_and_is_rarely_wrong():
    # Cohen et al.: PREDICT returns a class other than g(x) with probability <= alpha.
    # On the boundary (p = 0.5) every returned class is such an error.
    trials, n = 400, 500
    x_boundary = point_at_margin(0.0)
    x_close, _ = point_with_p1(0.55)
    not_abstained = wrong = 0
    for trial in range(trials):
        smooth = Smooth(linear_base(), 2, SIGMA, noise_seed=20_000 + trial, device="cpu")
        not_abstained += smooth.predict(x_boundary, n, ALPHA, 1000, index=0) != Smooth.ABSTAIN
        wrong += smooth.predict(x_close, n, ALPHA, 1000, index=1) == 0
    bound = binom_upper(trials, ALPHA)
    assert not_abstained <= bound  # i.e. abstain rate >= 1 - bound / trials ~ 1 - alpha - slack
    assert wrong <= bound


def test_predict_with_no_samples_abstains_and_unanimous_vote_wins():
    # n = 0: no votes at all, nothing can be tested -> abstain
    smooth = Smooth(ConstantClass(1, 3), 3, 0.25, noise_seed=0)
    assert smooth.predict(torch.zeros(1, 2, 2), 0, ALPHA, 100) == Smooth.ABSTAIN
    assert smooth.predict(torch.zeros(1, 2, 2), 100, ALPHA, 100) == 1


# --- rslib.certification.certify: shards, merging, TSV output --------------------------------------------------


def test_shard_ranges_cover_exactly():
    for num in range(1, 60):
        for k in list(range(1, 25)) + [59, 60, 100]:
            ranges = shard_ranges(num, k)
            assert len(ranges) == min(k, num)
            assert ranges[0][0] == 0 and ranges[-1][1] == num
            for (a, b), (c, _) in zip(ranges, ranges[1:]):
                assert b == c  # contiguous, no overlap, no gap
            sizes = [b - a for a, b in ranges]
            assert min(sizes) >= 1  # no empty shards
            assert max(sizes) - min(sizes) <= 1  # near-equal
            covered = [i for a, b in ranges for i in range(a, b)]
            assert covered == list(range(num))
    assert shard_ranges(10_000, 7)[-1] == (round(6 * 10_000 / 7), 10_000)
    assert shard_ranges(0, 3) == []


def _row(i: int, label: int = 1, predict: int = 1, radius: float = 0.5) -> str:
    return f"{i}\t{label}\t{predict}\t{radius!r}\t{int(label == predict)}\t0.01\n"


def _write_shard(path: Path, indices, header: str = HEADER) -> Path:
    path.write_text(header + "".join(_row(i) for i in indices))
    return path


def test_merge_shards_concatenates_in_order(tmp_path):
    a = _write_shard(tmp_path / "a.tsv", [5, 9])
    b = _write_shard(tmp_path / "b.tsv", [2])
    c = tmp_path / "c.tsv"
    c.write_text(HEADER + _row(11) + "\n")  # a trailing blank line is ignored
    out = tmp_path / "out" / "merged.tsv"
    merge_shards([a, b, c], out, [5, 9, 2, 11])
    assert out.read_text() == HEADER + _row(5) + _row(9) + _row(2) + _row(11)
    assert [p.name for p in out.parent.iterdir()] == ["merged.tsv"]  # no temp files left


@pytest.mark.parametrize(
    "shards, expected",
    [
        ([[0, 1], [3]], [0, 1, 2, 3]),  # a row is missing
        ([[2, 3], [0, 1]], [0, 1, 2, 3]),  # shards out of order
        ([[0, 1], [1, 2, 3]], [0, 1, 2, 3]),  # duplicated row
        ([[0, 1], [2, 3, 4]], [0, 1, 2, 3]),  # an extra row
    ],
    ids=["missing", "order", "duplicate", "extra"],
)
def test_merge_shards_rejects_wrong_rows(tmp_path, shards, expected):
    paths = [_write_shard(tmp_path / f"s{k}.tsv", rows) for k, rows in enumerate(shards)]
    out = tmp_path / "merged.tsv"
    with pytest.raises(ValueError, match="rerun the certify shards"):
        merge_shards(paths, out, expected)
    assert not out.exists()


def test_merge_shards_rejects_bad_header(tmp_path):
    good = _write_shard(tmp_path / "a.tsv", [0])
    bad = _write_shard(tmp_path / "b.tsv", [1], header="idx\tlabel\tpredict\tradius\tcorrect\n")
    with pytest.raises(ValueError, match="bad header"):
        merge_shards([good, bad], tmp_path / "merged.tsv", [0, 1])
    assert not (tmp_path / "merged.tsv").exists()


def test_merge_shards_refuses_a_last_row_without_its_newline(tmp_path):
    """certificate_row ends every row with a newline: a shard whose last row lacks it was cut,
    even where the fields that remain parse (issue 19: such a shard used to merge)."""
    a = tmp_path / "a.tsv"
    a.write_text(HEADER + _row(0).rstrip("\n"))
    b = _write_shard(tmp_path / "b.tsv", [1])
    out = tmp_path / "merged.tsv"
    with pytest.raises(CertificateError, match=f"{a}:2: incomplete row: no newline after field 'time'"):
        merge_shards([a, b], out, [0, 1])
    assert not out.exists()


def test_certify_images_writes_cohen_tsv_with_unrounded_radii(tmp_path):
    base = linear_base()
    dataset = {}
    for i, (p, label) in enumerate([(0.9, 1), (0.8, 0), (0.5, 1), (0.97, 1), (0.7, 1), (0.2, 0)]):
        x = point_at_margin(0.0) if p == 0.5 else point_with_p1(p)[0]
        dataset[10 + i] = (x, torch.tensor(label))
    indices = [13, 10, 11, 12, 15]
    smooth = Smooth(base, 2, SIGMA, noise_seed=8, device="cpu")
    out = tmp_path / "cert.tsv"
    messages = []
    certify_images(smooth, dataset, indices, out, n0=N0, n=N, alpha=ALPHA, batch_size=300, log=messages.append)

    text = out.read_text()
    assert text.startswith("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    lines = text.splitlines()[1:]
    assert len(lines) == len(indices)
    assert messages and messages[-1].startswith(f"certified {len(indices)}/{len(indices)}")
    for line, i in zip(lines, indices):
        idx, label, predict, radius, correct, elapsed = line.split("\t")
        x, y = dataset[i]
        expected_pred, expected_radius = Smooth(base, 2, SIGMA, noise_seed=8, device="cpu").certify(
            x, N0, N, ALPHA, 1000, index=i
        )
        assert int(idx) == i and int(label) == int(y)
        assert int(predict) == expected_pred
        assert radius == repr(expected_radius)  # unrounded, shortest round-trip float
        assert float(radius) == expected_radius
        assert int(correct) == int(expected_pred == int(y))
        assert float(elapsed) >= 0
    # at least one radius needs more than Cohen et al.'s 3 decimals
    assert any(len(line.split("\t")[3].split(".")[-1]) > 3 for line in lines)
    # row for index 11 (label 0, p(class 1) = 0.8) is a confident wrong prediction
    row11 = lines[indices.index(11)].split("\t")
    assert row11[2] == "1" and row11[4] == "0" and float(row11[3]) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["cert.tsv"]  # atomic, no temp files


def test_merge_shards_rejects_a_row_with_missing_fields(tmp_path):
    a = tmp_path / "a.tsv"
    a.write_text(HEADER + "0\t1\t1\t0.5\t1\n")
    with pytest.raises(ValueError, match="expected 6 tab-separated fields"):
        merge_shards([a], tmp_path / "merged.tsv", [0])
    assert not (tmp_path / "merged.tsv").exists()


def test_noisy_batches_equal_x_plus_sigma_noise_in_every_layout():
    # the in-place build of each batch (one reused buffer) gives exactly x + σ·ε, and the
    # channels-last copy changes the layout only
    from rslib.certification.smooth import noisy_batches

    x = torch.rand(3, 5, 4)
    noise = NoiseStream(11).sample(2, "estimation", 100, 730, x.shape)
    expected = x.unsqueeze(0) + 0.37 * noise
    for channels_last in (False, True):
        batches = [b.clone() for b in noisy_batches(x, 730, 300, NoiseStream(11), 0.37, 2, "estimation", 100,
                                                     channels_last=channels_last)]
        assert [len(b) for b in batches] == [300, 300, 130]
        assert all(b.is_contiguous(memory_format=torch.channels_last) == channels_last for b in batches)
        assert torch.equal(torch.cat(batches), expected)


def test_channels_last_option_defaults_to_cuda_only_and_is_checked():
    plain = Smooth(linear_base(), 2, SIGMA, noise_seed=1, device="cpu")
    assert plain.channels_last is False  # default: channels-last on CUDA only
    with pytest.raises(ValueError, match="channels_last must be True, False or None"):
        Smooth(linear_base(), 2, SIGMA, channels_last="yes")


def test_a_device_named_with_or_without_index_is_one_device():
    # a tensor made on "cuda" reports "cuda:0" (and one made on "cpu:0" reports "cpu"): the
    # reused batch buffer must be accepted either way, or certification on a GPU would fail
    x, _ = point_with_p1(0.7)
    counts = {dev: Smooth(linear_base(), 2, SIGMA, noise_seed=4, device=dev).sample_counts(x, 300, 200, index=1)
              for dev in ("cpu", "cpu:0")}
    assert counts["cpu"].tolist() == counts["cpu:0"].tolist() and int(counts["cpu"].sum()) == 300
