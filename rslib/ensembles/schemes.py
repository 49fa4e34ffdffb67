"""Named ensemble schemes: how each ensemble of the paper and its baselines is certified.

A scheme is an aggregation rule of :mod:`rslib.ensembles` plus where its weights come from:

================== ================ ===============================================================
scheme             rule             weights
================== ================ ===============================================================
average            soft             1/k — EsbRS with average weights (``000`` Sec. 3.2, Tables 1, 3)
optimal-paper      soft             per query point, Alg. 2 with the TRUE label (``000`` App. B) [#]_
optimal-predicted  soft             per query point, Alg. 2 with the label the average ensemble
                                    selects from the n0 selection samples (no label leakage)
optimal-global     soft             Alg. 2's objective averaged over held-out training images,
                                    fixed for every test point (sound certificate)
mme                mme              none — max-margin member decides (``000`` Table 3, ref. [21])
logit              logit            1/k — logit averaging (``004`` Sec. 4, Eq. (2))
vote               vote             1/k — hard majority vote
k-consensus        k_consensus      1/k — ``004`` Sec. 6, first K members agree or logit average
sween              soft             SWEEN weights fitted on held-out training images (``002`` Sec. 5.1)
sween-adaptive     sween_adaptive   SWEEN weights, adaptive prediction (``002`` App. B.1)
================== ================ ===============================================================

.. [#] The "paper" protocol reproduces ``000``'s Table 3 as published. Its weights depend on the
   test label and on the test input, so its "certificate" is not a guarantee for any fixed
   classifier; "predicted" removes the label leakage, "global" is the only sound one.
   docs/methods.md ("The three EsbRS weight protocols") explains the difference.

Ensembles are named like the paper names them: ``advmacer:1+smoothadv:2`` is
EsbRS-AdvMacer×1+SmoothAdv×2 (:func:`parse_ensemble_name`, :func:`ensemble_members`).
Certification itself lives in :mod:`rslib.ensembles.certify`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# No torch here: the workflow imports this module when it parses the Snakefile.

WeightSource = Literal["uniform", "none", "point-true", "point-predicted", "fitted-optimal", "fitted-sween"]


@dataclass(frozen=True)
class Scheme:
    """A named way to certify an ensemble: its ``aggregation`` rule (a key of
    :data:`rslib.ensembles.rules.RULES`) and the source of its weights."""

    name: str
    aggregation: str
    weights: WeightSource
    label: str  # how tables name it
    sound: bool  # is CERTIFY's radius a guarantee for one fixed classifier?

    @property
    def fitted(self) -> str | None:
        """``"optimal"`` or ``"sween"`` when the weights are fitted once on held-out data."""
        return self.weights.removeprefix("fitted-") if self.weights.startswith("fitted-") else None

    @property
    def per_point(self) -> bool:
        return self.weights.startswith("point-")


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("average", "soft", "uniform", "average weights", True),
        Scheme("optimal-paper", "soft", "point-true", "optimal weights (paper protocol)", False),
        Scheme("optimal-predicted", "soft", "point-predicted", "optimal weights (predicted label)", False),
        Scheme("optimal-global", "soft", "fitted-optimal", "optimal weights (global)", True),
        Scheme("mme", "mme", "none", "MME", True),
        Scheme("logit", "logit", "uniform", "logit average", True),
        Scheme("vote", "vote", "uniform", "majority vote", True),
        Scheme("k-consensus", "k_consensus", "uniform", "K-consensus", True),
        Scheme("sween", "soft", "fitted-sween", "SWEEN", True),
        Scheme("sween-adaptive", "sween_adaptive", "fitted-sween", "SWEEN adaptive", True),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown ensemble scheme {name!r}; known: {', '.join(SCHEMES)}") from None


def parse_ensemble_name(name: str) -> list[tuple[str, int]]:
    """``"advmacer:1+smoothadv:2"`` → ``[("advmacer", 1), ("smoothadv", 2)]``: the paper's
    EsbRS-AdvMacer×1+SmoothAdv×2 (``000`` Table 1 naming). Methods appear at most once."""
    parts = []
    for term in name.split("+"):
        method, sep, count = term.partition(":")
        if not sep or not method or not count.isdigit() or int(count) < 1:
            raise ValueError(f"ensemble {name!r}: write each member group as method:count, e.g. advmacer:1+smoothadv:2")
        parts.append((method, int(count)))
    methods = [m for m, _ in parts]
    if len(set(methods)) != len(methods):
        raise ValueError(f"ensemble {name!r} names a method twice; write it once with the total count")
    return parts


def ensemble_members(name: str, seeds: Mapping[str, Sequence[int]]) -> list[tuple[str, int]]:
    """The (method, seed) members of ensemble ``name``: method:count takes the first ``count``
    of that method's trained seeds (``seeds[method]``, in configured order), so members of one
    method always come from distinct seeds and a larger ensemble extends a smaller one
    (``000`` Figure 3 grows ensembles this way)."""
    members = []
    for method, count in parse_ensemble_name(name):
        available = list(seeds.get(method, []))
        if len(available) < count:
            raise ValueError(f"ensemble {name!r} needs {count} {method} models but only seeds {available} are trained")
        members.extend((method, int(seed)) for seed in available[:count])
    return members


def member_key(method: str, seed: int) -> int:
    """A stable integer naming an ensemble member (its training method and seed); seeds the
    member's pseudo-models so that different members never share parameter perturbations."""
    return zlib.crc32(f"{method}/{int(seed)}".encode())


#: How the paper writes each training method in table rows and ensemble names.
METHOD_NAMES = {
    "gaussian": "Gaussian",
    "smoothadv": "SmoothAdv",
    "macer": "MACER",
    "advmacer": "AdvMacer",
    "consistency": "Consistency",
    "smoothmix": "SmoothMix",
}


def ensemble_label(name: str) -> str:
    """``"advmacer:1+smoothadv:2"`` → ``"EsbRS-AdvMacer×1+SmoothAdv×2"`` (``000`` Table 1)."""
    return "EsbRS-" + "+".join(f"{METHOD_NAMES.get(m, m)}×{c}" for m, c in parse_ensemble_name(name))
