# Helpers only: configuration lookups, paths and wildcard constraints (no rules here).

import re
import sys

from snakemake.exceptions import WorkflowError

# rslib from this checkout, also when Snakemake runs from an environment without it installed.
sys.path.insert(0, workflow.basedir)
from rslib.versions import STAGE_VERSIONS

#: The one pinned software environment of every rule (used with --sdm conda).
CONDA_ENV = "../envs/rslib.yaml"

DATA = config["data_dir"]
RESULTS = config["results_dir"]
MODEL_DIR = "{dataset}/{method}/sigma{sigma}/seed{seed}"


def sigma_key(sigma):
    """σ as written in paths and wildcards: two decimals, as the paper writes it (0.25, 1.00)."""
    return f"{float(sigma):.2f}"


def _models_from_config():
    models = []
    for method, per_dataset in config["methods"].items():
        for dataset, settings in per_dataset.items():
            if dataset not in config["datasets"]:
                raise WorkflowError(
                    f"methods.{method}.{dataset}: dataset {dataset!r} is not configured under `datasets`"
                )
            dataset_sigmas = {sigma_key(s) for s in config["datasets"][dataset]["sigmas"]}
            sigmas = [sigma_key(s) for s in settings.get("sigmas", config["datasets"][dataset]["sigmas"])]
            unknown = sorted(set(sigmas) - dataset_sigmas)
            if unknown:
                raise WorkflowError(
                    f"methods.{method}.{dataset}.sigmas: {unknown} not in datasets.{dataset}.sigmas"
                )
            seeds_by_sigma = {sigma_key(k): v for k, v in settings.get("seeds_by_sigma", {}).items()}
            for section in ("by_sigma", "seeds_by_sigma"):
                for key in settings.get(section, {}):
                    if sigma_key(key) not in sigmas:
                        raise WorkflowError(f"methods.{method}.{dataset}.{section}: sigma {key} is not trained")
            for sigma in sigmas:
                for seed in seeds_by_sigma.get(sigma, settings["seeds"]):
                    models.append(dict(dataset=dataset, method=method, sigma=sigma, seed=seed))
    return models


#: Every (dataset, method, σ, seed) the configuration trains.
MODELS = _models_from_config()


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in sorted(set(values)))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    method=_alternatives(config["methods"]),
    sigma=_alternatives(m["sigma"] for m in MODELS),
    seed=r"\d+",
    shard=r"\d+",


def method_settings(wildcards):
    try:
        return config["methods"][wildcards.method][wildcards.dataset]
    except KeyError:
        raise WorkflowError(
            f"method {wildcards.method!r} is not configured for dataset {wildcards.dataset!r}"
        ) from None


def train_hparams(wildcards):
    """The method's hparams for this dataset with its per-σ overrides applied."""
    settings = method_settings(wildcards)
    merged = dict(settings["hparams"])
    for key, override in settings.get("by_sigma", {}).items():
        if sigma_key(key) == wildcards.sigma:
            merged.update(override)
    return merged


def job_runtime(rule_name):
    """Runtime that grows with the attempt number, so a retry after a time-limit kill (which
    resumes from the checkpoint) gets more time: "12h" → 12h, 24h, 36h."""
    value = config["resources"][rule_name]["runtime"]
    amount, unit = int(value[:-1]), value[-1]
    return lambda wildcards, attempt: f"{amount * attempt}{unit}"


def eval_settings(wildcards):
    """How the dataset's evaluation subset is chosen (the scripts compute the indices from it)."""
    return {k: config["datasets"][wildcards.dataset][k] for k in ("eval_every", "eval_max_images")}


def eval_positions(dataset):
    """Upper bound on the evaluation subset size; the exact subset is computed from the
    prepared dataset at run time (rslib.data.evaluation_indices)."""
    return config["datasets"][dataset]["eval_max_images"]


def shard_ids(dataset):
    return range(min(config["certify"]["shards"], eval_positions(dataset)))


def model_path(**wc):
    return f"{RESULTS}/models/{MODEL_DIR.format(**wc)}/model.pt"


def certificate_path(**wc):
    return f"{RESULTS}/certify/{MODEL_DIR.format(**wc)}/certify.tsv"


def model_label(m):
    return f"{m['dataset']}/{m['method']}/σ={m['sigma']}/seed {m['seed']}"
