# Regenerates Liu et al., "Promoting Robustness of Randomized Smoothing: Two Cost-Effective
# Approaches" (AdvMacer, EsbRS) with its baselines. Stages live in rules/*.smk; this file only
# loads and validates the configuration and names the targets.
#
#   snakemake --profile slurm all                       # the paper, on a SLURM cluster
#   snakemake --cores 2 --configfile demo/config.yaml   # the embedded digits demo (make demo)

from snakemake.utils import min_version, validate

min_version("9.20")


# config.yaml is the default; a --configfile replaces it instead of being merged into it
# (a merge would leave the paper's datasets inside the demo's configuration).
if not config:

    configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/certify.smk"
include: "rules/ensemble.smk"
include: "rules/paper.smk"
include: "rules/cost.smk"


onstart:
    # before anything is submitted: --profile slurm on a host without SLURM's commands
    stop = missing_cluster_commands(workflow.executor_plugin and workflow.executor_plugin.name)
    if stop:
        sys.exit(stop)


rule all:
    input:
        rules.summary.output,
        rules.ensemble_summary.output,
        [PATHS.result(f"{a.name}.{a.suffix}") for a in ARTEFACTS.values()],
        PLAN.curves(),
        rules.comparison.output,
        rules.cost_estimate.output,
        rules.provenance_table.output,
    default_target: True
