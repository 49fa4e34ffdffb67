# GPU-hour estimate of the configured run (SPEC "Performance"): a few real optimisation steps of
# every configured training setting and certification forward passes are timed on a GPU job
# (measure_costs), then scaled to the plan's jobs (cost_estimate).


rule measure_costs:
    output:
        PATHS.result("costs/measured.json"),
    params:
        jobs=PLAN.train_cost_jobs() + PLAN.imported_cost_jobs(),
        device=config["device"],
        steps=config["cost"]["steps"],
        certify_batch=config["certify"]["batch_size"],
        autocast_bf16=config["certify"]["autocast_bf16"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("measure_costs"),
    benchmark:
        PATHS.benchmark("measure_costs"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/measure_costs.py"


rule cost_estimate:
    input:
        # no GPU job when the run trains, imports and certifies nothing (published logs only)
        measured=rules.measure_costs.output[0] if PLAN.measures_costs() else [],
    output:
        csv=PATHS.result("cost_estimate.csv"),
        md=report(PATHS.result("cost_estimate.md"), caption="../report/cost.rst", category="Cost"),
    params:
        train_jobs=PLAN.train_cost_jobs(),
        imported_jobs=PLAN.imported_cost_jobs(),
        imported_unpriced=PLAN.imported_unpriced(),
        certify_jobs=PLAN.certify_cost_jobs(),
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("cost_estimate"),
    benchmark:
        PATHS.benchmark("cost_estimate"),
    localrule: True
    script:
        "../workflow_scripts/cost_estimate.py"
