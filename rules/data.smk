# Dataset download / preparation into data/<dataset>/ (npz arrays, or an ImageNet manifest).
# A local rule: cluster compute nodes often have no internet; ImageNet is only indexed.


rule prepare_data:
    output:
        meta=PATHS.data_meta,
    params:
        source=dataset_setting("source"),
        version=STAGE_VERSIONS["data"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("prepare_data/{dataset}"),
    benchmark:
        PATHS.benchmark("prepare_data/{dataset}"),
    localrule: True
    resources:
        mem_mb=4000,
    script:
        "../workflow_scripts/prepare_data.py"
