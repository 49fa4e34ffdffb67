# Tables and figures from the certification TSVs only: cheap, local, and rebuilt on a cosmetic
# change without retraining or recertifying anything.


rule summary:
    input:
        certificates=[certificate_path(**m) for m in MODELS],
    output:
        table=f"{RESULTS}/certified_accuracy.tex",
        csv=f"{RESULTS}/certified_accuracy.csv",
        figure=f"{RESULTS}/certified_accuracy.pdf",
    params:
        models=MODELS,
        radii=config["report"]["radii"],
        max_radius=config["report"]["figure_max_radius"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/summary.log",
    localrule: True
    script:
        "../workflow_scripts/summary.py"


rule ensemble_summary:
    input:
        certificates=[ensemble_certificate_path(**e) for e in ENSEMBLES],
        adaptive=[adaptive_path(**e) for e in ADAPTIVE],
    output:
        table=f"{RESULTS}/ensembles.tex",
        csv=f"{RESULTS}/ensembles.csv",
        adaptive=f"{RESULTS}/adaptive.csv",
    params:
        ensembles=ENSEMBLES,
        adaptive=ADAPTIVE,
        radii=config["report"]["radii"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/ensemble_summary.log",
    localrule: True
    script:
        "../workflow_scripts/ensemble_summary.py"
