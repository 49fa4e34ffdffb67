"""Reading a validated configuration: σ as paths and tables write it, a method's datasets, and its
hyper-parameters with their per-σ overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sigma_key(sigma: Any) -> str:
    """σ as paths, wildcards and tables write it: two decimals, as the paper does (0.25, 1.00)."""
    return f"{float(sigma):.2f}"


#: Keys of ``methods.<name>`` that are not datasets: a method of the user's own names its class
#: (``module``) and may name its table rows (``label``).
METHOD_ENTRY_KEYS = ("module", "label")


def method_datasets(config: Mapping[str, Any], method: str) -> dict[str, Mapping[str, Any]]:
    """``methods.<method>``'s settings per dataset (without ``module`` and ``label``)."""
    return {k: v for k, v in config["methods"][method].items() if k not in METHOD_ENTRY_KEYS}


def configured_hparams(config: Mapping[str, Any], method: str, dataset: str, sigma: Any) -> dict[str, Any] | None:
    """:func:`merged_hparams`, or None when ``method`` is not configured for ``dataset``."""
    if dataset not in config["methods"].get(method, {}):
        return None
    return merged_hparams(config, method, dataset, sigma)


def merged_hparams(config: Mapping[str, Any], method: str, dataset: str, sigma: Any) -> dict[str, Any]:
    """``methods.<method>.<dataset>.hparams`` of a configuration with its ``by_sigma`` override for
    ``sigma`` applied ({} for a method configured only with released checkpoints)."""
    settings = config["methods"][method][dataset]
    merged = dict(settings.get("hparams", {}))
    for key, override in settings.get("by_sigma", {}).items():
        if sigma_key(key) == sigma_key(sigma):
            merged.update(override)
    return merged


def with_defaults(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with the schema's defaults filled in where a key is missing, as
    Snakemake's ``validate(config, schema, set_default=True)`` does, without validating: for code
    that reads a configuration outside Snakemake (the device check, a user's script) and may run
    where neither Snakemake nor jsonschema is installed."""
    import copy

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            target: Any = schema
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def fill(instance: Any, node: Mapping[str, Any]) -> None:
        node = resolve(node)
        if isinstance(instance, dict):
            properties = node.get("properties", {})
            for key, sub in properties.items():
                if key not in instance and "default" in resolve(sub):
                    instance[key] = copy.deepcopy(resolve(sub)["default"])
            extra = node.get("additionalProperties")
            for key, value in instance.items():
                if key in properties:
                    fill(value, properties[key])
                elif isinstance(extra, Mapping):
                    fill(value, extra)
        elif isinstance(instance, list) and isinstance(node.get("items"), Mapping):
            for value in instance:
                fill(value, node["items"])

    out = copy.deepcopy(dict(config))
    fill(out, schema)
    return out
