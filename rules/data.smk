# Dataset download / preparation into data/<dataset>/ (npz arrays, or an ImageNet manifest).
# A local rule: cluster compute nodes often have no internet; ImageNet is only indexed. A dataset
# of your own (datasets.<name>.kind: npz or imagefolder) is converted from its files.


rule prepare_data:
    input:
        for_dataset(PLAN.user_files),  # a dataset of your own's npz files: replacing one prepares it again
    output:
        meta=PATHS.data_meta,
    params:
        source=for_dataset(PLAN.data_source),  # a registered dataset's `source`, or your dataset's entry
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
