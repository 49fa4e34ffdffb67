# CERTIFY (Cohen et al.) of each model on the fixed evaluation subset, sharded over contiguous
# ranges of that subset (one GPU job per shard), then merged exactly into one TSV per model.
# Ensemble members are run once (rule member_outputs) and certified from their stored counts.
# A published certification log (methods.<m>.<d>.published_logs) can stand for a single-model row
# of the tables: import_certification_log checks every row, the dataset's classes and the σ in its
# path, and restricts it to the evaluation subset.


rule certify:
    input:
        unpack(certify_inputs),
        data=PATHS.data_meta,
    output:
        tsv=PATHS.certificate_shard,
        provenance=PATHS.certificate_shard_record,
    params:
        settings=config["certify"],
        eval=evaluation,
        num_shards=shard_count,
        noise_seed=config["noise_seed"],
        device=config["device"],
        version=STAGE_VERSIONS["certify"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"certify/{MODEL}/shard{{shard}}"),
    benchmark:
        PATHS.benchmark(f"certify/{MODEL}/shard{{shard}}"),
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=certify_gpus,
        mem_mb=config["resources"]["certify"]["mem_mb"],
        runtime=job_runtime("certify"),
    script:
        "../workflow_scripts/certify.py"


rule merge_certificates:
    input:
        shards=shard_files(PATHS.certificate_shard),
        shard_provenance=shard_files(PATHS.certificate_shard_record),
        data=PATHS.data_meta,
        model=model_file,
    output:
        tsv=PATHS.certificate,
        provenance=PATHS.certificate_record,
    params:
        eval=evaluation,
        settings=config["certify"],
    conda:
        CONDA_ENV
    log:
        PATHS.log(f"merge_certificates/{MODEL}"),
    benchmark:
        PATHS.benchmark(f"merge_certificates/{MODEL}"),
    localrule: True
    script:
        "../workflow_scripts/merge_certificates.py"


rule import_certification_log:
    input:
        log=published_log,  # no dataset: the registry knows its test-split size and classes
    output:
        tsv=PATHS.published_certificate,
        provenance=PATHS.published_record,
    params:
        eval=evaluation,
        version=STAGE_VERSIONS["certify"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("import_certification_log/{dataset}/{method}/sigma{sigma}"),
    benchmark:
        PATHS.benchmark("import_certification_log/{dataset}/{method}/sigma{sigma}"),
    localrule: True
    script:
        "../workflow_scripts/import_certification_log.py"
