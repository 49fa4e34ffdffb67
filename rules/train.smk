# One GPU job per (dataset, method, σ, seed). Per-epoch training state is kept in
# results/checkpoints/..., outside the declared output, because Snakemake deletes declared
# outputs before each attempt: a retry after a SLURM time limit or preemption resumes from it.
# A grid slot configured with a released checkpoint (methods.<m>.<d>.released; 000 Sec. 4 certified
# SmoothAdv's published models) is imported instead: a local CPU job, no training; it checks the
# imported model on the first 100 evaluation images under one noise draw (rslib.models.released.plausibility).


rule train:
    input:
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        model=f"{RESULTS}/models/{MODEL_DIR}/model.pt",
        curve=f"{RESULTS}/models/{MODEL_DIR}/training_curve.csv",
    params:
        checkpoint_dir=f"{RESULTS}/checkpoints/{MODEL_DIR}",
        arch=lambda wc: config["datasets"][wc.dataset]["arch"],
        hparams=train_hparams,
        curve=dict(config["training_curves"], noise_seed=config["noise_seed"]),
        eval=eval_settings,
        heldout=lambda wc: config["datasets"][wc.dataset]["heldout_images"],
        device=config["device"],
        version=STAGE_VERSIONS["train"],
    conda:
        CONDA_ENV
    message:
        "train {wildcards.method} on {wildcards.dataset}, sigma={wildcards.sigma}, seed {wildcards.seed}: {params.hparams}"
    log:
        f"{RESULTS}/logs/train/{MODEL_DIR}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{MODEL_DIR}.tsv"
    threads: config["resources"]["train"]["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=job_runtime("train"),
    script:
        "../workflow_scripts/train.py"


rule import_model:
    input:
        released=lambda wc: released_entry(wc)["path"],
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        model=f"{RESULTS}/imported/{MODEL_DIR}/model.pt",
    params:
        format=lambda wc: released_entry(wc)["format"],
        input_layer=lambda wc: released_entry(wc)["input_layer"],
        allow_pickle=lambda wc: released_entry(wc)["allow_pickle"],
        accept_implausible=lambda wc: released_entry(wc)["accept_implausible"],
        evaluation=eval_settings,
        noise_seed=config["noise_seed"],
        arch=lambda wc: config["datasets"][wc.dataset]["arch"],
        version=STAGE_VERSIONS["train"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/import_model/{MODEL_DIR}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import_model/{MODEL_DIR}.tsv",
    localrule: True
    resources:
        mem_mb=4000,
    script:
        "../workflow_scripts/import_model.py"
