# Dataset download / preparation into data/<dataset>/ (npz arrays, or an ImageNet manifest).
# A local rule: cluster compute nodes often have no internet; ImageNet is only indexed.


rule prepare_data:
    output:
        meta=f"{DATA}/{{dataset}}/meta.json",
    params:
        source=lambda wc: config["datasets"][wc.dataset]["source"],
        version=STAGE_VERSIONS["data"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv",
    localrule: True
    resources:
        mem_mb=4000,
    script:
        "../workflow_scripts/prepare_data.py"
