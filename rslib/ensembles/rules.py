"""Aggregation rules of an ensemble, all ``(member_logits[members, samples, K], weights) ->
LongTensor[samples]``, and the ensemble as one ``nn.Module``.

* ``soft``  — EsbRS: argmax Σ_l w_l softmax(z_l) (``000`` Sec. 3.2; average weights 1/k);
* ``logit`` — soft-voting on logits, argmax Σ_l w_l z_l (``004`` Sec. 4, Eq. (2));
* ``vote``  — hard (weighted) majority vote of member argmaxes (``004``'s "hard-voting");
* ``mme``   — Max-Margin Ensemble (``000`` ref. [21], Table 3): the member with the largest
  top-1 − top-2 softmax margin on that sample decides;
* ``k_consensus`` — ``004`` Sec. 6 "K-Consensus Aggregation": if the first K members agree,
  return their class, else the logit average of all members;
* ``sween_adaptive`` — ``002`` Sec. 4.3 / App. B.1 Algorithm 1: weighted adaptive early exit.

Soundness: every rule is a fixed function of the members' outputs on the noisy input (no label,
no weights computed from the query's label), so the smoothed ensemble is an ordinary base
classifier and Cohen et al.'s CERTIFY applies unchanged (EsbRS, ``000`` Sec. 3.2, Theorem 3.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

#: An aggregation rule: (member logits [members, samples, K], weights [members] or None)
#: -> predicted class per sample, LongTensor[samples].
Rule = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# 2. Aggregation rules
# ---------------------------------------------------------------------------------------------
def _prepare(member_logits: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits (stored outputs may be float16) and float32 weights (default 1/k)."""
    if member_logits.dim() != 3:
        raise ValueError(f"member logits must be [members, samples, classes], got shape {tuple(member_logits.shape)}")
    z = member_logits.float()
    members = z.shape[0]
    if weights is None:
        w = torch.full((members,), 1.0 / members, dtype=torch.float32, device=z.device)
    else:
        w = torch.as_tensor(weights, dtype=torch.float32, device=z.device).flatten()
        if w.numel() != members:
            raise ValueError(f"got {w.numel()} weights for {members} members")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return z, w


def soft_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """EsbRS soft ensemble: argmax_c Σ_l w_l softmax(z_l)_c (``000`` Sec. 3.2, H(x) = Σ w_l F^l(x)).

    ``weights=None`` is the average-weight EsbRS (w_l = 1/k). Ties → lowest class.
    """
    z, w = _prepare(member_logits, weights)
    return torch.einsum("m,msk->sk", w, z.softmax(dim=2)).argmax(dim=1)


def logit_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-voting on logits: argmax_c Σ_l w_l z_{l,c} (``004`` Sec. 4, Eq. (2), γ = identity)."""
    z, w = _prepare(member_logits, weights)
    return torch.einsum("m,msk->sk", w, z).argmax(dim=1)


def vote_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hard (weighted) majority vote of the members' argmaxes (``004`` App., "hard-voting").

    Ties between classes → lowest class index (``argmax`` returns the first maximum).
    """
    z, w = _prepare(member_logits, weights)
    votes = F.one_hot(z.argmax(dim=2), z.shape[2]).float()  # [members, samples, K]
    return torch.einsum("m,msk->sk", w, votes).argmax(dim=1)


def mme_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Max-Margin Ensemble (``000`` ref. [21], compared in ``000`` Table 3).

    On each sample the member with the largest softmax margin p_top1 − p_top2 decides (ties
    → lowest member index). MME has no weights; members with weight 0 are excluded, so a
    weight vector can select a sub-ensemble like for the other rules.
    """
    z, w = _prepare(member_logits, weights)
    if z.shape[2] < 2:
        return torch.zeros(z.shape[1], dtype=torch.long, device=z.device)
    top2 = z.softmax(dim=2).topk(2, dim=2).values
    margin = top2[..., 0] - top2[..., 1]  # [members, samples]
    margin = margin.masked_fill((w <= 0)[:, None], -math.inf)
    decider = margin.argmax(dim=0)  # [samples]
    classes = z.argmax(dim=2)  # [members, samples]
    return classes.gather(0, decider[None]).squeeze(0)


def k_consensus_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None, *, k: int = 2) -> torch.Tensor:
    """K-Consensus aggregation (``004`` Sec. 6).

    Members are assumed ordered (``004``: by accuracy under noise on a holdout set). If the
    first ``k`` members agree on the predicted class, ``004`` soft-votes those k and returns
    the result; soft-voting of k members that all predict c gives c (each z_l has its maximum
    at c, hence so does their sum), so that class is returned. Otherwise the (weighted) logit
    average of *all* members decides, as in ``004``'s Eq. (2) soft-voting. ``k`` larger than the
    ensemble is clamped (then the rule equals ``logit``). Members with weight 0 are not queried.
    """
    if k < 1:
        raise ValueError(f"k-consensus needs k >= 1, got {k}")
    z, w = _prepare(member_logits, weights)
    active = z[w > 0]  # zero-weight members take no part in the consensus either
    first = active[: min(k, active.shape[0])].argmax(dim=2)  # [k, samples]
    agree = (first == first[:1]).all(dim=0)
    fallback = torch.einsum("m,msk->sk", w, z).argmax(dim=1)
    return torch.where(agree, first[0], fallback)


def sween_adaptive_rule(
    member_logits: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    threshold: float = 0.999,
    alpha: float = 0.05,
) -> torch.Tensor:
    """SWEEN adaptive prediction for weighted ensembles (``002`` Sec. 4.3, App. B.1 Alg. 1), with
    the constants and the exit rule of the authors' code (github SWEEN-author/SWEEN,
    ``model/ensemble.py``, class ``AEnsemble``): T = 0.999, confidence level 0.95 (``alpha`` =
    1 − level), z = Φ⁻¹(1 − α/2) of the standard normal.

    Members are queried in descending weight order π (stable: ties keep member order). After
    i members, with ŵ_j = w_πj / Σ_{j≤i} w_πj, p̄_i = Σ_{j≤i} ŵ_j p_πj (softmax outputs) and
    L = argmax p̄_i, evaluation stops at the first i with

    * i = 1 and p̄_{1,L} > T (the top member is confident), or
    * i > 1 and p̄_{i,L} > 1/2 + z · sqrt(Σ_{j≤i} ŵ_j²) · sqrt(Σ_{j≤i} ŵ_j (p_πj,L − p̄_{i,L})²)
      (the standard error of a weighted mean, with the weighted variance uncorrected, exactly
      as their code computes it), or
    * i = K (all members used),

    and returns L. The rule is a deterministic function of the member outputs on each noisy
    sample, so smoothing it is sound (``002`` App. B.1). Unlike the authors' code we compute all
    members' outputs (they are stored anyway) and reproduce the decision, not the saving.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z, w = _prepare(member_logits, weights)
    order = torch.sort(w, descending=True, stable=True).indices
    w = w[order].double()
    # float64: the variance is formed from running sums, which cancel in float32
    p = z[order].softmax(dim=2).double()  # [members, samples, K]
    members = p.shape[0]
    cum_w = torch.cumsum(w, 0)[:, None, None]  # W_i
    cum_wp = torch.cumsum(w[:, None, None] * p, 0)  # Σ w p
    cum_wp2 = torch.cumsum(w[:, None, None] * p * p, 0)  # Σ w p²
    mean = cum_wp / cum_w  # p̄_i  [members, samples, K]
    k_i = mean.argmax(dim=2, keepdim=True)  # [members, samples, 1]
    m_k = mean.gather(2, k_i).squeeze(2)
    W = cum_w[..., 0]
    # Σ_j ŵ_j (p_j − p̄)² = (Σ w p² − 2 p̄ Σ w p + p̄² W) / W, all at class L
    sum_wp = cum_wp.gather(2, k_i).squeeze(2)
    sum_wp2 = cum_wp2.gather(2, k_i).squeeze(2)
    variance = ((sum_wp2 - 2 * m_k * sum_wp + m_k * m_k * W) / W).clamp_min(0)
    sum_w2_hat = torch.cumsum(w * w, 0)[:, None] / (W * W)  # Σ ŵ²
    z_crit = float(norm.ppf(1 - alpha / 2))
    half_width = z_crit * torch.sqrt(sum_w2_hat) * torch.sqrt(variance)
    stop = torch.zeros_like(m_k, dtype=torch.bool)
    stop[0] = m_k[0] > threshold
    if members > 1:
        stop[1:] = m_k[1:] > 0.5 + half_width[1:]
    stop[-1] = True
    first_stop = stop.to(torch.uint8).argmax(dim=0)  # argmax returns the first True
    return k_i.squeeze(2).gather(0, first_stop[None]).squeeze(0)


#: Registry of aggregation rules by name. Rules with parameters take them as keywords
#: (``k`` for ``k_consensus``, ``threshold``/``alpha`` for ``sween_adaptive``); see :func:`get_rule`.
RULES: dict[str, Callable[..., torch.Tensor]] = {
    "soft": soft_rule,
    "logit": logit_rule,
    "vote": vote_rule,
    "mme": mme_rule,
    "k_consensus": k_consensus_rule,
    "sween_adaptive": sween_adaptive_rule,
}


def get_rule(rule: str | Rule, **params: Any) -> Rule:
    """Resolve a rule name (or pass a callable through), binding keyword parameters.

    ``get_rule("k_consensus", k=5)`` is the 5-consensus rule of ``004`` Sec. 6.
    """
    if callable(rule):
        return functools.partial(rule, **params) if params else rule
    try:
        fn = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown ensemble rule {rule!r}; known: {', '.join(RULES)}") from None
    return functools.partial(fn, **params) if params else fn


# ---------------------------------------------------------------------------------------------
# 4. Direct evaluation
# ---------------------------------------------------------------------------------------------
class EnsembleClassifier(nn.Module):
    """The ensemble's hard decision as a base classifier, for ``Smooth`` to certify directly.

    ``forward`` runs every member on the batch, aggregates with ``rule`` (``rule_params`` are
    bound as in :func:`get_rule`) and returns ``one_hot(decision).float()`` so that
    ``Smooth``'s argmax counts are the rule's decisions.
    Used where storing outputs is too large (many classes × large n) and as the reference that
    :func:`certify_from_outputs` must reproduce.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        rule: str | Rule = "soft",
        weights: torch.Tensor | Sequence[float] | None = None,
        output_dtype: torch.dtype | None = None,
        **rule_params: Any,
    ):
        super().__init__()
        #: round member logits to this dtype before aggregating, to evaluate exactly the
        #: classifier that outputs stored in that dtype certify (see compute_member_outputs)
        self.output_dtype = output_dtype
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.rule = get_rule(rule, **rule_params)
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w is not None and w.numel() != len(members):
            raise ValueError(f"got {w.numel()} weights for {len(members)} members")
        # a buffer so that .to(device) moves the weights with the members
        self.register_buffer("weights", w, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 reduction even under bf16 autocast, as for stored outputs
        outputs = [member(x).float() for member in self.members]
        if self.output_dtype is not None:
            outputs = [z.to(self.output_dtype).float() for z in outputs]
        logits = torch.stack(outputs)
        decision = self.rule(logits, self.weights)
        return F.one_hot(decision, logits.shape[2]).float()
