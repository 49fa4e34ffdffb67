"""When can a cell of ours be compared with the paper? Every setting of a run that differs from
the paper's configuration (the workflow's ``config.yaml``, every value of which cites ``000``) for
that cell; torch-free, so the workflow computes it while it builds the DAG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rslib.experiment.artefacts import artefact, artefact_dataset
from rslib.experiment.config import merged_hparams

#: CERTIFY's parameters (``000`` Sec. 4: N0 = 100, N = 100,000, α = 0.001) and our precision switch.
CERTIFY_KEYS = ("n0", "n", "alpha", "autocast_bf16")


def describe_evaluation(ev: Mapping[str, int]) -> str:
    """``{start, stride, count}`` in words: "the first 500 test images", "every 100th … from 0"."""
    if ev["stride"] == 1 and ev["start"] == 0:
        return f"the first {ev['count']} test images"
    every = "every image" if ev["stride"] == 1 else f"every {ev['stride']}th image"
    return f"{ev['count']} test images, {every} from {ev['start']}"


def configuration_deviations(
    run: Mapping[str, Any],
    reference: Mapping[str, Any],
    name: str,
    sigma: str,
    trained_methods: Sequence[str] = (),
    ensemble_settings: Sequence[str] = (),
    certified_here: bool = True,
) -> list[str]:
    """Why the cells of one source (a table row at one σ) are not comparable with the paper:
    each setting of the run configuration ``run`` that differs from ``reference``, the paper's
    configuration (the workflow's ``config.yaml``, every value of which cites ``000``), both
    validated with the schema's defaults. [] when the cells are comparable.

    Checked: the artefact's dataset (``paper.main``/``svhn``/``imagenet``; nothing else is
    compared on another dataset), its architecture and evaluation subset; CERTIFY's parameters
    when this run certified the row (``certified_here``; a published log carries its authors'
    own); the merged hyper-parameters at ``sigma`` of each method this run trained for the row
    (``trained_methods``: the method, or the ensemble's trained members; an imported checkpoint
    was trained by its authors); and the ``ensembles.<key>`` settings a fitted or per-point
    scheme reads (``ensemble_settings``).
    """
    dataset, paper_dataset = artefact_dataset(name, run["paper"]), artefact_dataset(name, reference["paper"])
    if dataset != paper_dataset:
        return [f"dataset {dataset} (the paper: {artefact(name).paper_dataset})"]
    out = []
    mine, theirs = run["datasets"][dataset], reference["datasets"][dataset]
    if mine["arch"] != theirs["arch"]:
        out.append(f"arch {mine['arch']} (the paper: {theirs['arch']})")
    if dict(mine["evaluation"]) != dict(theirs["evaluation"]):
        out.append(f"evaluation on {describe_evaluation(mine['evaluation'])} "
                   f"(the paper: {describe_evaluation(theirs['evaluation'])})")
    if certified_here:
        out += [f"certify.{k} {run['certify'][k]} (the paper: {reference['certify'][k]})"
                for k in CERTIFY_KEYS if run["certify"][k] != reference["certify"][k]]
    for method in trained_methods:
        if dataset not in reference["methods"].get(method, {}):
            out.append(f"{method} is not trained on {dataset} in the paper")
            continue
        ours, paper = merged_hparams(run, method, dataset, sigma), merged_hparams(reference, method, dataset, sigma)
        out += [f"{method} {k} {ours.get(k, 'unset')} (the paper: {paper.get(k, 'unset')})"
                for k in sorted(set(ours) | set(paper)) if ours.get(k) != paper.get(k)]
    out += [f"ensembles.{k} differs from the paper's" for k in ensemble_settings
            if run["ensembles"].get(k) != reference["ensembles"].get(k)]
    return out
