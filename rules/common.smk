# Helpers only: configuration lookups, paths and wildcard constraints (no rules here).

import re
import sys
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

# rslib from this checkout, also when Snakemake runs from an environment without it installed.
sys.path.insert(0, workflow.basedir)
from rslib.data.registry import DATASETS, available_evaluation_images
from rslib.ensembles.schemes import SCHEMES, ensemble_members, get_scheme
from rslib.experiment.artefacts import Configured, Source, artefact_dataset, member_sources, table_sources
from rslib.experiment.config import merged_hparams, sigma_key
from rslib.experiment.released_files import load_manifest, missing_files_message
from rslib.runtime.errors import ConfigError
from rslib.runtime.jobs import missing_cluster_commands
from rslib.runtime.versions import STAGE_VERSIONS
from rslib.training.hparams import check_hparam_keys

#: The one pinned software environment of every rule (used with --sdm conda).
CONDA_ENV = "../envs/rslib.yaml"

DATA = config["data_dir"]
RESULTS = config["results_dir"]
MODEL_DIR = "{dataset}/{method}/sigma{sigma}/seed{seed}"


def _models_from_config():
    """Every model slot of the grid, and the released checkpoint files that fill some of them
    (``methods.<m>.<d>.released``: per σ a format and one file per seed slot)."""
    models, released, logs = [], {}, {}
    for method, per_dataset in config["methods"].items():
        for dataset, settings in per_dataset.items():
            where = f"methods.{method}.{dataset}"
            if dataset not in config["datasets"]:
                raise WorkflowError(f"{where}: dataset {dataset!r} is not configured under `datasets`")
            dataset_sigmas = {sigma_key(s) for s in config["datasets"][dataset]["sigmas"]}
            sigmas = [sigma_key(s) for s in settings.get("sigmas", config["datasets"][dataset]["sigmas"])]
            unknown = sorted(set(sigmas) - dataset_sigmas)
            if unknown:
                raise WorkflowError(f"{where}.sigmas: {unknown} not in datasets.{dataset}.sigmas")
            seeds_by_sigma = {sigma_key(k): v for k, v in settings.get("seeds_by_sigma", {}).items()}
            for section in ("by_sigma", "seeds_by_sigma", "released"):
                for key in settings.get(section, {}):
                    if sigma_key(key) not in sigmas:
                        raise WorkflowError(f"{where}.{section}: sigma {key} is not configured for this method")
            for key in settings.get("published_logs", {}):  # a log may report a σ the method does not train at
                if sigma_key(key) not in dataset_sigmas:
                    raise WorkflowError(f"{where}.published_logs: sigma {key} is not in datasets.{dataset}.sigmas")
            released_here = {sigma_key(k): v for k, v in settings.get("released", {}).items()}
            for key, path in settings.get("published_logs", {}).items():
                logs[(dataset, sigma_key(key), method)] = path
            for sigma in sigmas:
                seeds = seeds_by_sigma.get(sigma, settings["seeds"])
                if sigma in released_here:
                    files = released_here[sigma]["files"]
                    if len(files) != len(seeds):
                        raise WorkflowError(
                            f"{where}.released.{sigma}: {len(files)} files for {len(seeds)} seed slots "
                            f"{seeds}; give one file per seed"
                        )
                    for seed, path in zip(seeds, files):
                        released[(dataset, method, sigma, seed)] = dict(
                            path=path, format=released_here[sigma]["format"],
                            input_layer=released_here[sigma].get("input_layer"),
                            allow_pickle=released_here[sigma].get("allow_pickle", False),
                            accept_implausible=released_here[sigma].get("accept_implausible", False),
                        )
                elif seeds and "hparams" not in settings:
                    raise WorkflowError(
                        f"{where}: hparams are missing, and sigma {sigma} has no released checkpoints to import"
                    )
                for seed in seeds:
                    models.append(dict(dataset=dataset, method=method, sigma=sigma, seed=seed))
            if not settings["seeds"] and not seeds_by_sigma and not settings.get("published_logs"):
                raise WorkflowError(f"{where}: no seeds and no published_logs: nothing to train, import or report")
    return models, released, logs


#: Every (dataset, method, σ, seed) model of the configuration, trained or imported; the
#: released checkpoint {path, format} of each imported one; and the published certification
#: logs that stand for a (dataset, σ, method)'s single-model row.
MODELS, RELEASED, PUBLISHED_LOGS = _models_from_config()

#: Every configured released file and published log that is not on disk, in one message with where
#: to get each (presets/released-files.yaml); raised by the input functions that need one, so a
#: (dry) run stops before any job, while targets that need none of them (the cost estimate) still run.
MISSING_RELEASED = missing_files_message(
    [r["path"] for r in RELEASED.values()] + list(PUBLISHED_LOGS.values()),
    load_manifest(f"{workflow.basedir}/presets/released-files.yaml"),
)


def require_released_files():
    if MISSING_RELEASED:
        raise WorkflowError(MISSING_RELEASED)


def is_released(m):
    return (m["dataset"], m["method"], m["sigma"], int(m["seed"])) in RELEASED


def model_origin(m):
    """"trained" or "imported" (a released checkpoint)."""
    return "imported" if is_released(m) else "trained"


#: The models the workflow trains itself.
TRAINED = [m for m in MODELS if not is_released(m)]


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
    sigma=_alternatives(sigma_key(s) for d in config["datasets"].values() for s in d["sigmas"]),
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


def _hparams_validator():
    import jsonschema
    import yaml

    schema = yaml.safe_load(open(f"{workflow.basedir}/schemas/config.schema.yaml"))
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/hparams", "$defs": schema["$defs"]})


def _check_hparams():
    """Every method's hparams and each per-σ override: keys the method reads (a misspelt key
    would silently leave its default in force) and, merged per σ, values of the right type."""
    validator = _hparams_validator()
    for method, per_dataset in config["methods"].items():
        for dataset, settings in per_dataset.items():
            where = f"methods.{method}.{dataset}"
            try:
                check_hparam_keys(method, settings.get("hparams", {}), f"{where}.hparams")
                for key, override in settings.get("by_sigma", {}).items():
                    check_hparam_keys(method, override, f"{where}.by_sigma.{key}")
            except ConfigError as exc:
                raise WorkflowError(str(exc)) from None
            if "hparams" not in settings:
                continue
            # hparams themselves passed the schema in the Snakefile; the per-σ overrides did not
            for key, override in settings.get("by_sigma", {}).items():
                merged = {**settings["hparams"], **override}
                error = next(iter(sorted(validator.iter_errors(merged), key=lambda e: list(e.path))), None)
                if error is not None:
                    field = ".".join(str(p) for p in error.path) or "hparams"
                    raise WorkflowError(f"{where}.by_sigma.{key}: {field}: {error.message}")


_check_hparams()


def configured_hparams(wildcards):
    """The method's hparams for this dataset with its per-σ overrides applied ({} for a method
    configured only with released checkpoints)."""
    method_settings(wildcards)  # a clear error for an unconfigured (method, dataset)
    return merged_hparams(config, wildcards.method, wildcards.dataset, wildcards.sigma)


def train_hparams(wildcards):
    """What the train rule trains with; a slot filled by a released checkpoint is not trained."""
    m = dict(dataset=wildcards.dataset, method=wildcards.method, sigma=wildcards.sigma, seed=wildcards.seed)
    if is_released(m):
        raise WorkflowError(
            f"{model_label(m)} is imported from the released checkpoint {released_entry(wildcards)['path']} "
            f"(methods.{m['method']}.{m['dataset']}.released), not trained: ask for {model_path(**m)}"
        )
    return configured_hparams(wildcards)


def released_entry(wildcards):
    """{path, format, input_layer, allow_pickle, accept_implausible} of the released checkpoint
    that fills this grid slot."""
    key = (wildcards.dataset, wildcards.method, wildcards.sigma, int(wildcards.seed))
    if key not in RELEASED:
        raise WorkflowError(
            f"{wildcards.dataset}/{wildcards.method}/sigma{wildcards.sigma}/seed{wildcards.seed} has no released "
            f"checkpoint in methods.{wildcards.method}.{wildcards.dataset}.released: it is trained"
        )
    require_released_files()
    return RELEASED[key]


def job_runtime(rule_name):
    """Runtime that grows with the attempt number, so a retry after a time-limit kill (which
    resumes from the checkpoint) gets more time: "12h" → 12h, 24h, 36h."""
    value = config["resources"][rule_name]["runtime"]
    amount, unit = int(value[:-1]), value[-1]
    return lambda wildcards, attempt: f"{amount * attempt}{unit}"


def _evaluation_sizes():
    """Images in each dataset's evaluation subset, checked against the registry's test-split
    size before any job runs (ImageNet is checked again against the user's folder)."""
    sizes = {}
    for name, settings in config["datasets"].items():
        ev = settings["evaluation"]
        available = available_evaluation_images(DATASETS[name].test_images, ev["start"], ev["stride"])
        if ev["count"] > available:
            raise WorkflowError(
                f"datasets.{name}.evaluation: count {ev['count']} but {name}'s {DATASETS[name].test_images} test "
                f"images give only {available} from start {ev['start']} with stride {ev['stride']}"
            )
        sizes[name] = ev["count"]
    return sizes


EVALUATION_IMAGES = _evaluation_sizes()


def eval_settings(wildcards):
    """The dataset's evaluation subset (start, stride, count); the scripts compute the indices."""
    return dict(config["datasets"][wildcards.dataset]["evaluation"])


def eval_positions(dataset):
    """Number of images in the dataset's evaluation subset."""
    return EVALUATION_IMAGES[dataset]


def shard_ids(dataset):
    return range(min(config["certify"]["shards"], eval_positions(dataset)))


def model_path(**wc):
    """The model file of a grid slot: trained (results/models/…) or imported from a released
    checkpoint (results/imported/…); every consumer asks here."""
    kind = "imported" if is_released(wc) else "models"
    return f"{RESULTS}/{kind}/{MODEL_DIR.format(**{k: wc[k] for k in ('dataset', 'method', 'sigma', 'seed')})}/model.pt"


def model_input(wildcards):
    return model_path(**dict(wildcards.items()))


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


def ensemble_evaluation(dataset):
    """How a dataset's ensembles are certified, as the ensemble summary says it."""
    if stored_outputs(dataset):
        return f"stored {config['datasets'][dataset]['stored_output_dtype']} outputs"
    return "direct evaluation"


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
    return {"model": model_input(wildcards)}


def scheme_settings(scheme_name):
    """The `ensembles` settings a scheme reads (only those: changing SWEEN's settings must not
    rerun the average-weight certificates)."""
    scheme = get_scheme(scheme_name)
    keys = set()
    if scheme.per_point or scheme.fitted == "optimal":
        keys.add("optimal")
    if scheme.fitted == "sween" or scheme.aggregation == "sween_adaptive":
        keys.add("sween")
    if scheme.aggregation == "k_consensus":
        keys.add("k_consensus")
    return {k: config["ensembles"][k] for k in sorted(keys)}


# --- the paper's tables and figures (rules/paper.smk) ----------------------------------------

PAPER = config["paper"]

#: The paper's own numbers (000 Tables 1-8), transcribed once; only the comparison reads them.
REPORTED = f"{workflow.basedir}/paper/reported.csv"


def _configured():
    first_seed, origins = {}, {}
    for m in MODELS:
        key = (m["dataset"], m["sigma"], m["method"])
        if key not in first_seed:
            first_seed[key] = m["seed"]
            origins[key] = model_origin(m)
    origins.update({key: "published log" for key in PUBLISHED_LOGS})  # a configured log stands for the row
    return Configured(
        first_seed=first_seed,
        ensembles={(e["dataset"], e["sigma"], e["ensemble"], e["scheme"]) for e in ENSEMBLES},
        sigmas={d: [sigma_key(s) for s in v["sigmas"]] for d, v in config["datasets"].items()},
        origins=origins,
    )


CONFIGURED = _configured()


def artefact_sources(artefact):
    """Sources (single models / ensemble certificates) that artefact reports, as configured."""
    return table_sources(artefact, PAPER, CONFIGURED)


def source_model(src):
    seed = CONFIGURED.first_seed[(src.dataset, src.sigma, src.name)] if src.seed is None else src.seed
    return dict(dataset=src.dataset, method=src.name, sigma=src.sigma, seed=seed)


def published_certificate_path(dataset, sigma, method):
    return f"{RESULTS}/published/{dataset}/{method}/sigma{sigma}/certify.tsv"


def published_log(wildcards):
    """The published certification log configured for (dataset, σ, method)."""
    key = (wildcards.dataset, wildcards.sigma, wildcards.method)
    if key not in PUBLISHED_LOGS:
        raise WorkflowError(f"no published log configured in methods.{wildcards.method}.{wildcards.dataset}"
                            f".published_logs for sigma {wildcards.sigma}")
    require_released_files()
    return PUBLISHED_LOGS[key]


def source_certificate(src):
    if src.single and src.origin == "published log":
        return published_certificate_path(src.dataset, src.sigma, src.name)
    if src.single:
        return certificate_path(**source_model(src))
    return ensemble_certificate_path(dataset=src.dataset, sigma=src.sigma, ensemble=src.name, scheme=src.scheme)


def source_record(src):
    """The certify.json written beside a source's certificate (its provenance: devices, times)."""
    return source_certificate(src).replace("certify.tsv", "certify.json")


def source_curve(src):
    """The training curve of a single model this workflow trained (imported and published rows have none)."""
    return f"{RESULTS}/models/{MODEL_DIR.format(**source_model(src))}/training_curve.csv"


def source_hparams(src):
    """Table 2's T, m, ε, epochs of a single-model row: its configured hparams ({} if none)."""
    return configured_hparams(SimpleNamespace(dataset=src.dataset, method=src.name, sigma=src.sigma)) if src.single else {}


def source_seed_models(src):
    """Every seed slot of a trained single-model row, first seed first: its seed spread. None for
    ensembles, published logs and imported rows (released checkpoints in further slots are other
    configurations, e.g. other ε, not seeds of the row's)."""
    if not src.single or src.origin != "trained":
        return []
    return [m for m in MODELS if (m["dataset"], m["sigma"], m["method"]) == (src.dataset, src.sigma, src.name)]


def _reference_config():
    """The paper's configuration (config.yaml beside the Snakefile, with the schema's defaults):
    what a run must match for a cell to be comparable with the paper (rslib.report.comparison)."""
    import yaml
    from snakemake.utils import validate

    with open(f"{workflow.basedir}/config.yaml") as f:
        reference = yaml.safe_load(f)
    validate(reference, f"{workflow.basedir}/schemas/config.schema.yaml")
    return reference


REFERENCE_CONFIG = _reference_config()


def source_deviations(src, artefact):
    """Why the cells of src in artefact are not comparable with the paper ("" when they are)."""
    from rslib.experiment.comparability import configuration_deviations

    if src.single:
        trained = [src.name] if src.origin == "trained" else []
        settings = []
    else:
        trained = sorted({m for m, seed in ensemble_members(src.name, trained_seeds(src.dataset, src.sigma))
                          if not is_released(dict(dataset=src.dataset, method=m, sigma=src.sigma, seed=seed))})
        settings = list(scheme_settings(src.scheme))
    return "; ".join(configuration_deviations(config, REFERENCE_CONFIG, artefact, src.sigma, trained, settings,
                                              certified_here=src.origin != "published log"))


def artefact_members(artefact):
    """Members of Table 3's ensembles (configured seed order): their certification time is part
    of the ensemble's."""
    if artefact != "table3":
        return []
    members = []
    for src in artefact_sources(artefact):
        if not src.single:
            for m in member_sources(src, trained_seeds(src.dataset, src.sigma)):
                if m not in members:
                    members.append(m)
    return members


def curve_sources(dataset, sigma):
    """Every method (first seed) and every average-weight ensemble certified at (dataset, σ)."""
    singles = [Source(dataset, sigma, method, origin=origin) for (d, s, method), origin in CONFIGURED.origins.items()
               if (d, s) == (dataset, sigma)]
    ensembles = [Source(d, s, name, scheme) for (d, s, name, scheme) in sorted(CONFIGURED.ensembles)
                 if (d, s, scheme) == (dataset, sigma, "average")]
    return singles + ensembles


#: One radius-accuracy figure per configured (dataset, σ).
CURVES = [f"{RESULTS}/curves/{d}_sigma{sigma_key(s)}.pdf" for d, v in config["datasets"].items() for s in v["sigmas"]]


def _cost_job(m):
    return dict(m, sigma=float(m["sigma"]), arch=config["datasets"][m["dataset"]]["arch"],
                hparams=configured_hparams(SimpleNamespace(**m)),
                heldout=config["datasets"][m["dataset"]]["heldout_images"])


def cost_train_jobs():
    """Every training job with its merged hparams, for the GPU-hour estimate (rules/cost.smk)."""
    return [_cost_job(m) for m in TRAINED]


def cost_imported_jobs():
    """Imported models whose training settings are configured (hparams beside `released`): what
    training them here would cost, i.e. the GPU-hours the released checkpoints save."""
    return [_cost_job(m) for m in MODELS if is_released(m) and configured_hparams(SimpleNamespace(**m))]


def cost_imported_unpriced():
    """Imported models without configured hparams: their training cost cannot be estimated."""
    return [model_label(m) for m in MODELS if is_released(m) and not configured_hparams(SimpleNamespace(**m))]


def cost_certify_jobs():
    """One certification pass per model (an ensemble member's stored outputs are its pass)."""
    return [
        dict(dataset=m["dataset"], arch=config["datasets"][m["dataset"]]["arch"], model=model_label(m),
             method=m["method"], sigma=float(m["sigma"]), images=eval_positions(m["dataset"]),
             n0=config["certify"]["n0"], n=config["certify"]["n"])
        for m in MODELS
    ]


def fitted_weights(wildcards):
    """The held-out weights a fitted scheme needs (none for the others)."""
    fit = get_scheme(wildcards.scheme).fitted
    return [f"{RESULTS}/ensembles/{ENSEMBLE_DIR.format(**wildcards)}/weights-{fit}.json"] if fit else []


def pseudo_output_shards(wildcards):
    """Pseudo-model output shards of every member (member-major), for per-point EsbRS weights."""
    if not (stored_outputs(wildcards.dataset) and get_scheme(wildcards.scheme).per_point):
        return []
    return [
        f"{RESULTS}/outputs/{MODEL_DIR.format(**m)}/pseudo/{shard}.npz"
        for m in ensemble_models(wildcards)
        for shard in shard_ids(wildcards.dataset)
    ]
