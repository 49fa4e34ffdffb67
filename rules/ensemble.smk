# Ensembles (000 Sec. 3.2 EsbRS, MME, SWEEN, Horváth et al.): each member is run ONCE on the shared,
# seeded noise stream and its outputs stored (rule member_outputs, sharded like certify); every
# ensemble, weight scheme and ensemble size is then certified by a cheap reduction over the stored
# tensors (rule certify_ensemble). Members of ensembles with per-point EsbRS weights also store
# their pseudo-model outputs (rule pseudo_outputs). Datasets with ensemble_evaluation: direct (ImageNet: 1,000
# classes × n = 100,000 is too large to store) run the member networks inside certify_ensemble.


rule member_outputs:
    input:
        model=model_input,
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        f"{RESULTS}/outputs/{MODEL_DIR}/shards/{{shard}}.npz",
    params:
        settings=config["certify"],
        eval=eval_settings,
        num_shards=lambda wc: len(shard_ids(wc.dataset)),
        dtype=lambda wc: config["datasets"][wc.dataset]["stored_output_dtype"],
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/member_outputs/{MODEL_DIR}/shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/member_outputs/{MODEL_DIR}/shard{{shard}}.tsv",
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/member_outputs.py"


rule pseudo_outputs:
    input:
        model=model_input,
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        f"{RESULTS}/outputs/{MODEL_DIR}/pseudo/{{shard}}.npz",
    params:
        perturbation={k: config["ensembles"]["optimal"][k] for k in ("m", "n", "t", "sigma_tilde")},
        batch_size=config["certify"]["batch_size"],
        eval=eval_settings,
        num_shards=lambda wc: len(shard_ids(wc.dataset)),
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/pseudo_outputs/{MODEL_DIR}/shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pseudo_outputs/{MODEL_DIR}/shard{{shard}}.tsv",
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/pseudo_outputs.py"


rule fit_ensemble_weights:
    input:
        models=lambda wc: [model_path(**m) for m in ensemble_models(wc)],
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        f"{RESULTS}/ensembles/{ENSEMBLE_DIR}/weights-{{fit}}.json",
    params:
        settings=lambda wc: {wc.fit: config["ensembles"][wc.fit]},
        heldout=lambda wc: config["datasets"][wc.dataset]["heldout_images"],
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/fit_ensemble_weights/{ENSEMBLE_DIR}/{{fit}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_ensemble_weights/{ENSEMBLE_DIR}/{{fit}}.tsv",
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
        models=lambda wc: [] if stored_outputs(wc.dataset) else [model_path(**m) for m in ensemble_models(wc)],
        weights=fitted_weights,
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        tsv=f"{RESULTS}/ensembles/{ENSEMBLE_DIR}/{{scheme}}/certify.tsv",
        provenance=f"{RESULTS}/ensembles/{ENSEMBLE_DIR}/{{scheme}}/certify.json",
    params:
        members=lambda wc: ensemble_models(wc),
        certify=config["certify"],
        settings=lambda wc: scheme_settings(wc.scheme),
        eval=eval_settings,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/certify_ensemble/{ENSEMBLE_DIR}/{{scheme}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/certify_ensemble/{ENSEMBLE_DIR}/{{scheme}}.tsv",
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=lambda wc: 0 if stored_outputs(wc.dataset) else config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify_ensemble.py"


rule certify_adaptive:
    input:
        models=lambda wc: [model_path(**m) for m in ensemble_models(wc)],
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        summary=f"{RESULTS}/ensembles/{ENSEMBLE_DIR}/adaptive.json",
        tsv=f"{RESULTS}/ensembles/{ENSEMBLE_DIR}/adaptive.tsv",
    params:
        certify=config["certify"],
        adaptive=config["ensembles"]["adaptive"],
        settings=scheme_settings(config["ensembles"]["adaptive"]["scheme"]),
        eval=eval_settings,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["ensemble"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/certify_adaptive/{ENSEMBLE_DIR}.log",
    benchmark:
        f"{RESULTS}/benchmarks/certify_adaptive/{ENSEMBLE_DIR}.tsv",
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify_adaptive.py"
