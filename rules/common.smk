# Helpers only: the plan of the validated configuration, computed once (rslib.experiment.plan),
# the wildcard constraints it defines, and thin input functions that name a job's files from it.

import sys

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# rslib from this checkout, also when Snakemake runs from an environment without it installed.
sys.path.insert(0, workflow.basedir)
from rslib.experiment.artefacts import ARTEFACTS, FIGURES, TABLES, source_params
from rslib.experiment.config import with_defaults
from rslib.experiment.paths import ENSEMBLE, MODEL, Paths
from rslib.experiment.plan import Plan
from rslib.experiment.released_files import load_manifest
from rslib.runtime.errors import ConfigError
from rslib.runtime.jobs import missing_cluster_commands
from rslib.runtime.versions import STAGE_VERSIONS

#: The one pinned software environment of every rule (used with --sdm conda).
CONDA_ENV = "../envs/rslib.yaml"
#: The paper's own numbers (000 Tables 1-8), transcribed once; only the comparison reads them.
REPORTED = f"{workflow.basedir}/paper/reported.csv"


def _plan():
    """The plan, with config.yaml (the paper's configuration) as the reference of comparability."""
    schema = yaml.safe_load(open(f"{workflow.basedir}/schemas/config.schema.yaml"))
    reference = with_defaults(yaml.safe_load(open(f"{workflow.basedir}/config.yaml")), schema)
    manifest = load_manifest(f"{workflow.basedir}/presets/released-files.yaml")
    try:
        return Plan.from_config(config, reference=reference, manifest=manifest, schema=schema)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


PLAN = _plan()
PATHS = PLAN.paths
if workflow.is_main_process:  # once per run, not again in every cluster job
    for warning in PLAN.warnings():
        logger.warning(f"warning: {warning}")


wildcard_constraints:
    **PLAN.wildcard_constraints(),


def planned(method, *args):
    """Call a plan method from an input function; a configuration problem becomes Snakemake's error."""
    try:
        return method(*args)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def slot(wc):
    """The model slot named by a job's wildcards."""
    return dict(dataset=wc.dataset, method=wc.method, sigma=wc.sigma, seed=int(wc.seed))


def job_runtime(rule_name):
    """Runtime that grows with the attempt number, so a retry after a time-limit kill (which
    resumes from the checkpoint) gets more time: "12h" → 12h, 24h, 36h."""
    value = config["resources"][rule_name]["runtime"]
    amount, unit = int(value[:-1]), value[-1]
    return lambda wildcards, attempt: f"{amount * attempt}{unit}"


# --- data and models (rules/data.smk, rules/train.smk) ------------------------------------------
def dataset_setting(key):
    """A setting of the job's dataset (``datasets.<dataset>.<key>``), as a param."""
    return lambda wc: config["datasets"][wc.dataset][key]


def for_dataset(method):
    """A plan method of the job's dataset, ``method(dataset)``, as an input function or param."""
    return lambda wc: method(wc.dataset)


evaluation = for_dataset(PLAN.evaluation)


def train_hparams(wc):
    return planned(PLAN.train_hparams, slot(wc))


def train_version(wc):
    """The training stage's version; for a method of the user's own with its file's SHA-256."""
    return PLAN.train_version(wc.method)


def released(wc):
    """{path, format, input_layer, allow_pickle, accept_implausible, arch} of the slot's released file."""
    return planned(PLAN.released_file, slot(wc))


def released_field(key):
    """One field of the slot's released-file entry (a param of import_model)."""
    return lambda wc: released(wc)[key]


def model_file(wc):
    return PLAN.model_file(slot(wc))


# --- certification (rules/certify.smk) --------------------------------------------------------
def shard_count(wc):
    return len(PLAN.shard_ids(wc.dataset))


def certify_inputs(wc):
    return PLAN.certify_inputs(slot(wc), wc.shard)


def certify_gpus(wc):
    """No GPU for a model certified from its stored outputs."""
    return 0 if "outputs" in certify_inputs(wc) else config["resources"]["certify"]["gpu"]


def shard_files(template):
    """Every shard of the job's model, as an input (a certificate shard or its record)."""
    return lambda wc: [Paths.fill(template, shard=k, **slot(wc)) for k in PLAN.shard_ids(wc.dataset)]


def published_log(wc):
    return planned(PLAN.published_log, wc.dataset, wc.sigma, wc.method)


# --- ensembles (rules/ensemble.smk) -----------------------------------------------------------
def members(wc):
    """The ensemble's member models (dicts: dataset, method, sigma, seed)."""
    return planned(PLAN.ensemble_models, wc.dataset, wc.sigma, wc.ensemble)


def member_models(wc):
    return [PLAN.model_file(m) for m in members(wc)]


def member_models_if_direct(wc):
    """The member networks, for a dataset whose ensembles are evaluated directly."""
    return [] if PLAN.stores_outputs(wc.dataset) else member_models(wc)


def member_output_shards(wc):
    """Every output shard of every member, member-major (none when evaluated directly)."""
    return PLAN.member_output_shards(wc.dataset, wc.sigma, wc.ensemble) if PLAN.stores_outputs(wc.dataset) else []


def pseudo_output_shards(wc):
    """Pseudo-model output shards of every member (member-major), for per-point EsbRS weights."""
    if not (PLAN.stores_outputs(wc.dataset) and PLAN.per_point(wc.scheme)):
        return []
    return PLAN.member_output_shards(wc.dataset, wc.sigma, wc.ensemble, pseudo=True)


def fitted_weights(wc):
    """The held-out weights a fitted scheme needs (none for the others)."""
    fit = PLAN.fitted(wc.scheme)
    return [Paths.fill(PATHS.ensemble_weights, fit=fit, **wc)] if fit else []


def scheme_settings(wc):
    return PLAN.scheme_settings(wc.scheme)


def fit_settings(wc):
    return {wc.fit: config["ensembles"][wc.fit]}


def ensemble_gpus(wc):
    """No GPU for an ensemble certified from its members' stored outputs."""
    return 0 if PLAN.stores_outputs(wc.dataset) else config["resources"]["certify"]["gpu"]


# --- the paper's artefacts (rules/paper.smk) ----------------------------------------------------
def table_inputs(wc):
    """The certificates, training curves, further seeds (spread, bootstrap over seeds) and
    certify.json records (the devices behind time cells) that one table reads."""
    return planned(PLAN.table_inputs, wc.table)


def table_params(name):
    """One of the table's params (the lists that travel to rslib.report.tables.write_table)."""
    return lambda wc: planned(PLAN.table_params, wc.table)[name]


def figure_inputs(wc):
    return planned(PLAN.figure_inputs, wc.figure)


def figure_sources(wc):
    return [source_params(s) for s in PLAN.artefact_sources(wc.figure)]


def figure_sigma(wc):
    return config["paper"][f"{wc.figure}_sigma"]


def curve_certificates(wc):
    return [PLAN.source_certificate(s) for s in PLAN.curve_sources(wc.dataset, wc.sigma)]


def curve_sources(wc):
    return [source_params(s) for s in PLAN.curve_sources(wc.dataset, wc.sigma)]
