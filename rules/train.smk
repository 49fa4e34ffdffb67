# One GPU job per (dataset, method, σ, seed). Per-epoch training state is kept in
# results/checkpoints/..., outside the declared output, because Snakemake deletes declared
# outputs before each attempt: a retry after a SLURM time limit or preemption resumes from it.


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
