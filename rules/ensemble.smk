# Ensembles (000 Sec. 3.2 EsbRS, MME, SWEEN, Horváth et al.): each member is run ONCE on the shared,
# seeded noise stream and its outputs stored (rule member_outputs, sharded like certify); every
# ensemble, weight scheme and ensemble size is then certified by a cheap reduction over the stored
# tensors (rule certify_ensemble). Members of ensembles with per-point EsbRS weights also store
# their pseudo-model outputs (rule pseudo_outputs). Datasets with ensemble_evaluation: direct (ImageNet: 1,000
# classes × n = 100,000 is too large to store) run the member networks inside certify_ensemble.




rule member_outputs:
    input:
        model=model_file,
        data=PATHS.data_meta,
    output:
        PATHS.member_outputs,
    params:
        settings=config["certify"],
        eval=evaluation,
        num_shards=shard_count,
        dtype=dataset_setting("stored_output_dtype"),
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"member_outputs/{MODEL}/shard{{shard}}"),
    benchmark:
        PATHS.benchmark(f"member_outputs/{MODEL}/shard{{shard}}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/member_outputs.py"


rule pseudo_outputs:
    input:
        model=model_file,
        data=PATHS.data_meta,
    output:
        PATHS.pseudo_outputs,
    params:
        perturbation={k: config["ensembles"]["optimal"][k] for k in ("m", "n", "t", "sigma_tilde")},
        batch_size=config["certify"]["batch_size"],
        eval=evaluation,
        num_shards=shard_count,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"pseudo_outputs/{MODEL}/shard{{shard}}"),
    benchmark:
        PATHS.benchmark(f"pseudo_outputs/{MODEL}/shard{{shard}}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/pseudo_outputs.py"


rule fit_ensemble_weights:
    input:
        models=member_models,
        data=PATHS.data_meta,
    output:
        PATHS.ensemble_weights,
    params:
        settings=fit_settings,
        heldout=dataset_setting("heldout_images"),
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"fit_ensemble_weights/{ENSEMBLE}/{{fit}}"),
    benchmark:
        PATHS.benchmark(f"fit_ensemble_weights/{ENSEMBLE}/{{fit}}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/fit_ensemble_weights.py"


rule certify_ensemble:
    input:
        outputs=member_output_shards,
        pseudo=pseudo_output_shards,
        models=member_models_if_direct,
        weights=fitted_weights,
        data=PATHS.data_meta,
    output:
        tsv=PATHS.ensemble_certificate,
        provenance=PATHS.ensemble_record,
    params:
        members=members,
        certify=config["certify"],
        settings=scheme_settings,
        eval=evaluation,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"certify_ensemble/{ENSEMBLE}/{{scheme}}"),
    benchmark:
        PATHS.benchmark(f"certify_ensemble/{ENSEMBLE}/{{scheme}}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=ensemble_gpus,
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify_ensemble.py"


rule certify_adaptive:
    input:
        models=member_models,
        data=PATHS.data_meta,
    output:
        summary=PATHS.adaptive,
        tsv=PATHS.adaptive_tsv,
    params:
        certify=config["certify"],
        adaptive=config["ensembles"]["adaptive"],
        settings=PLAN.scheme_settings(config["ensembles"]["adaptive"]["scheme"]),
        eval=evaluation,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"certify_adaptive/{ENSEMBLE}"),
    benchmark:
        PATHS.benchmark(f"certify_adaptive/{ENSEMBLE}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify_adaptive.py"
