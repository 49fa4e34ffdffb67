# CERTIFY (Cohen et al.) of each model on the fixed evaluation subset, sharded over contiguous
# ranges of that subset (one GPU job per shard), then merged exactly into one TSV per model.
# Ensemble members are run once (rule member_outputs) and certified from their stored counts.
# A published certification log (methods.<m>.<d>.published_logs) can stand for a single-model row
# of the tables: import_certification_log checks every row, the dataset's classes and the σ in its
# path, and restricts it to the evaluation subset.


rule certify:
    input:
        unpack(certify_inputs),
        data=f"{DATA}/{{dataset}}/meta.json",
    output:
        tsv=f"{RESULTS}/certify/{MODEL_DIR}/shards/{{shard}}.tsv",
        provenance=f"{RESULTS}/certify/{MODEL_DIR}/shards/{{shard}}.json",
    params:
        settings=config["certify"],
        eval=eval_settings,
        num_shards=lambda wc: len(shard_ids(wc.dataset)),
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["certify"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/certify/{MODEL_DIR}/shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/certify/{MODEL_DIR}/shard{{shard}}.tsv",
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=lambda wc: 0 if "outputs" in certify_inputs(wc) else config["resources"]["certify"]["gpu"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify.py"


rule merge_certificates:
    input:
        shards=lambda wc: expand(
            f"{RESULTS}/certify/{MODEL_DIR}/shards/{{shard}}.tsv", shard=shard_ids(wc.dataset), **wc
        ),
        shard_provenance=lambda wc: expand(
            f"{RESULTS}/certify/{MODEL_DIR}/shards/{{shard}}.json", shard=shard_ids(wc.dataset), **wc
        ),
        data=f"{DATA}/{{dataset}}/meta.json",
        model=model_input,
    output:
        tsv=f"{RESULTS}/certify/{MODEL_DIR}/certify.tsv",
        provenance=f"{RESULTS}/certify/{MODEL_DIR}/certify.json",
    params:
        eval=eval_settings,
        settings=config["certify"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/merge_certificates/{MODEL_DIR}.log",
    benchmark:
        f"{RESULTS}/benchmarks/merge_certificates/{MODEL_DIR}.tsv",
    localrule: True
    script:
        "../workflow_scripts/merge_certificates.py"


rule import_certification_log:
    input:
        log=published_log,  # no dataset: the registry knows its test-split size and classes
    output:
        tsv=f"{RESULTS}/published/{{dataset}}/{{method}}/sigma{{sigma}}/certify.tsv",
        provenance=f"{RESULTS}/published/{{dataset}}/{{method}}/sigma{{sigma}}/certify.json",
    params:
        eval=eval_settings,
        version=STAGE_VERSIONS["certify"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/import_certification_log/{{dataset}}/{{method}}/sigma{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import_certification_log/{{dataset}}/{{method}}/sigma{{sigma}}.tsv",
    localrule: True
    script:
        "../workflow_scripts/import_certification_log.py"
