# GPU-hour estimate of the configured run (SPEC "Performance"): a few real optimisation steps of
# every configured training setting and certification forward passes are timed on a GPU job
# (measure_costs), then scaled to the configured grid (cost_estimate).


rule measure_costs:
    output:
        f"{RESULTS}/costs/measured.json",
    params:
        jobs=cost_train_jobs() + cost_imported_jobs(),
        device=config["device"],
        steps=config["cost"]["steps"],
        certify_batch=config["certify"]["batch_size"],
        autocast_bf16=config["certify"]["autocast_bf16"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/measure_costs.log",
    benchmark:
        f"{RESULTS}/benchmarks/measure_costs.tsv",
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
        measured=rules.measure_costs.output[0] if cost_train_jobs() + cost_imported_jobs() + cost_certify_jobs() else [],
    output:
        csv=f"{RESULTS}/cost_estimate.csv",
        md=report(f"{RESULTS}/cost_estimate.md", caption="../report/cost.rst", category="Cost"),
    params:
        train_jobs=cost_train_jobs(),
        imported_jobs=cost_imported_jobs(),
        imported_unpriced=cost_imported_unpriced(),
        certify_jobs=cost_certify_jobs(),
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/cost_estimate.log",
    benchmark:
        f"{RESULTS}/benchmarks/cost_estimate.tsv",
    localrule: True
    script:
        "../workflow_scripts/cost_estimate.py"
