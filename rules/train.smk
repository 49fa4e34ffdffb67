# One GPU job per (dataset, method, σ, seed). Per-epoch training state is kept in
# results/checkpoints/..., outside the declared output, because Snakemake deletes declared
# outputs before each attempt: a retry after a SLURM time limit or preemption resumes from it.
# A grid slot configured with a released checkpoint (methods.<m>.<d>.released; 000 Sec. 4 certified
# SmoothAdv's published models) is imported instead: a local CPU job, no training; it checks the
# imported model on the first 100 evaluation images under one noise draw (rslib.certification.plausibility).


rule train:
    input:
        data=PATHS.data_meta,
    output:
        model=PATHS.trained_model,
        curve=PATHS.training_curve,
    params:
        checkpoint_dir=PATHS.training_state,
        arch=dataset_setting("arch"),
        hparams=train_hparams,
        curve=dict(config["training_curves"], noise_seed=config["noise_seed"]),
        eval=evaluation,
        heldout=dataset_setting("heldout_images"),
        device=config["device"],
        version=train_version,
    conda:
        CONDA_ENV
    message:
        "train {wildcards.method} on {wildcards.dataset}, sigma={wildcards.sigma}, seed {wildcards.seed}: {params.hparams}"
    log:
        PATHS.log(f"train/{MODEL}"),
    benchmark:
        PATHS.benchmark(f"train/{MODEL}")
    threads: config["resources"]["train"]["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=job_runtime("train"),
    script:
        "../workflow_scripts/train.py"


rule import_model:
    input:
        released=released_field("path"),
        data=PATHS.data_meta,
    output:
        model=PATHS.imported_model,
    params:
        format=released_field("format"),
        input_layer=released_field("input_layer"),
        allow_pickle=released_field("allow_pickle"),
        accept_implausible=released_field("accept_implausible"),
        evaluation=evaluation,
        noise_seed=config["noise_seed"],
        arch=released_field("arch"),
        version=STAGE_VERSIONS["train"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"import_model/{MODEL}"),
    benchmark:
        PATHS.benchmark(f"import_model/{MODEL}"),
    localrule: True
    resources:
        mem_mb=4000,
    script:
        "../workflow_scripts/import_model.py"
