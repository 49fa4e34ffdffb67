# Helpers only: configuration lookups, paths and wildcard constraints (no rules here).

import re
import sys

from snakemake.exceptions import WorkflowError

# rslib from this checkout, also when Snakemake runs from an environment without it installed.
sys.path.insert(0, workflow.basedir)
from rslib.schemes import SCHEMES, ensemble_members, get_scheme
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


def trained_seeds(dataset, sigma):
    """{method: [seeds in configured order]} of the models trained at (dataset, σ)."""
    seeds = {}
    for m in MODELS:
        if m["dataset"] == dataset and m["sigma"] == sigma:
            seeds.setdefault(m["method"], []).append(m["seed"])
    return seeds


def _ensembles_from_config():
    certificates, adaptive = [], []
    for n, group in enumerate(config["ensembles"]["build"]):
        where = f"ensembles.build[{n}]"
        dataset = group["dataset"]
        if dataset not in config["datasets"]:
            raise WorkflowError(f"{where}: dataset {dataset!r} is not configured under `datasets`")
        settings = config["datasets"][dataset]
        for sigma in [sigma_key(s) for s in group.get("sigmas", settings["sigmas"])]:
            for name in group["members"]:
                try:
                    ensemble_members(name, trained_seeds(dataset, sigma))
                except ValueError as e:
                    raise WorkflowError(f"{where}, {dataset} sigma {sigma}: {e}") from None
                for scheme in group["schemes"]:
                    fitted = get_scheme(scheme).fitted
                    if fitted and not settings["heldout_images"]:
                        raise WorkflowError(
                            f"{where}: scheme {scheme} fits weights on held-out training images; "
                            f"set datasets.{dataset}.heldout_images"
                        )
                    entry = dict(dataset=dataset, sigma=sigma, ensemble=name, scheme=scheme)
                    if entry not in certificates:
                        certificates.append(entry)
                if group.get("adaptive", False):
                    entry = dict(dataset=dataset, sigma=sigma, ensemble=name)
                    if entry not in adaptive:
                        adaptive.append(entry)
    return certificates, adaptive


#: Every (dataset, σ, ensemble, scheme) certificate and every CertifyAdp (dataset, σ, ensemble).
ENSEMBLES, ADAPTIVE = _ensembles_from_config()

#: Models whose outputs are stored for ensembles: (dataset, method, σ, seed).
STORED_MEMBERS = {
    (e["dataset"], method, e["sigma"], seed)
    for e in ENSEMBLES
    if config["datasets"][e["dataset"]]["ensemble_evaluation"] == "stored"
    for method, seed in ensemble_members(e["ensemble"], trained_seeds(e["dataset"], e["sigma"]))
}


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in sorted(set(values)))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    method=_alternatives(config["methods"]),
    sigma=_alternatives(m["sigma"] for m in MODELS),
    seed=r"\d+",
    shard=r"\d+",
    ensemble=_alternatives([e["ensemble"] for e in ENSEMBLES + ADAPTIVE] or ["none"]),
    scheme=_alternatives(SCHEMES),
    fit=_alternatives({s.fitted for s in SCHEMES.values() if s.fitted}),


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


ENSEMBLE_DIR = "{dataset}/sigma{sigma}/{ensemble}"


def ensemble_models(wildcards):
    """Member models (dicts like MODELS entries) of the ensemble named by the wildcards."""
    members = ensemble_members(wildcards.ensemble, trained_seeds(wildcards.dataset, wildcards.sigma))
    return [dict(dataset=wildcards.dataset, method=m, sigma=wildcards.sigma, seed=s) for m, s in members]


def stored_outputs(dataset):
    """Ensembles of this dataset reduce stored member outputs (else evaluate members directly)."""
    return config["datasets"][dataset]["ensemble_evaluation"] == "stored"


def member_output_shards(wildcards):
    """Every output shard of every member, member-major (empty when evaluated directly)."""
    if not stored_outputs(wildcards.dataset):
        return []
    return [
        f"{RESULTS}/outputs/{MODEL_DIR.format(**m)}/shards/{shard}.npz"
        for m in ensemble_models(wildcards)
        for shard in shard_ids(wildcards.dataset)
    ]


def ensemble_certificate_path(**e):
    return f"{RESULTS}/ensembles/{ENSEMBLE_DIR.format(**e)}/{e['scheme']}/certify.tsv"


def adaptive_path(**e):
    return f"{RESULTS}/ensembles/{ENSEMBLE_DIR.format(**e)}/adaptive.json"


def certify_inputs(wildcards):
    """A model whose outputs are stored for ensembles is certified from its stored class counts
    (same noise, same float32 counts, no second network pass); any other model directly."""
    key = (wildcards.dataset, wildcards.method, wildcards.sigma, int(wildcards.seed))
    if key in STORED_MEMBERS and not config["certify"]["autocast_bf16"]:
        return {"outputs": f"{RESULTS}/outputs/{MODEL_DIR.format(**wildcards)}/shards/{wildcards.shard}.npz"}
    return {"model": f"{RESULTS}/models/{MODEL_DIR.format(**wildcards)}/model.pt"}


def scheme_settings(scheme_name):
    """The `ensembles` settings a scheme reads (only those: changing SWEEN's settings must not
    rerun the average-weight certificates)."""
    scheme = get_scheme(scheme_name)
    keys = set()
    if scheme.per_point or scheme.fitted == "optimal":
        keys.add("optimal")
    if scheme.fitted == "sween" or scheme.rule == "sween_adaptive":
        keys.add("sween")
    if scheme.rule == "k_consensus":
        keys.add("k_consensus")
    return {k: config["ensembles"][k] for k in sorted(keys)}
