"""Reading a validated configuration: σ as paths and tables write it, and a method's
hyper-parameters with their per-σ overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sigma_key(sigma: Any) -> str:
    """σ as paths, wildcards and tables write it: two decimals, as the paper does (0.25, 1.00)."""
    return f"{float(sigma):.2f}"


def merged_hparams(config: Mapping[str, Any], method: str, dataset: str, sigma: Any) -> dict[str, Any]:
    """``methods.<method>.<dataset>.hparams`` of a configuration with its ``by_sigma`` override for
    ``sigma`` applied ({} for a method configured only with released checkpoints)."""
    settings = config["methods"][method][dataset]
    merged = dict(settings.get("hparams", {}))
    for key, override in settings.get("by_sigma", {}).items():
        if sigma_key(key) == sigma_key(sigma):
            merged.update(override)
    return merged
