# The paper's artefacts (rslib.experiment.artefacts) from the certification TSVs, training curves and
# timings only: cheap, local, and rebuilt on a cosmetic change without retraining or recertifying
# anything. `snakemake results/table1.tex` builds exactly what Table 1 needs.


rule paper_table:
    input:
        unpack(table_inputs),
    output:
        tex=report(PATHS.table, caption="../report/tables.rst", category="Tables", labels={"table": "{table}"}),
        csv=PATHS.table_csv,
    params:
        sources=table_params("sources"),
        members=table_params("members"),
        hparams=table_params("hparams"),
        seed_counts=table_params("seed_counts"),
        deviations=table_params("deviations"),
        uncertainty=dict(config["report"]["bootstrap"], seed_statistics=config["paper"]["seed_statistics"]),
        dataset=table_params("dataset"),
        version=STAGE_VERSIONS["report"],
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        CONDA_ENV
    log:
        PATHS.log("paper/{table}"),
    benchmark:
        PATHS.benchmark("paper/{table}"),
    localrule: True
    script:
        "../workflow_scripts/paper_table.py"


rule paper_figure:
    input:
        unpack(figure_inputs),
    output:
        pdf=report(PATHS.figure, caption="../report/figures.rst", category="Figures", labels={"figure": "{figure}"}),
        csv=PATHS.figure_csv,
    params:
        sources=figure_sources,
        sigma=figure_sigma,
        version=STAGE_VERSIONS["report"],
    wildcard_constraints:
        figure="|".join(FIGURES),
    conda:
        CONDA_ENV
    log:
        PATHS.log("paper/{figure}"),
    benchmark:
        PATHS.benchmark("paper/{figure}"),
    localrule: True
    script:
        "../workflow_scripts/paper_figure.py"


rule summary:
    input:
        certificates=[PLAN.certificate(m) for m in PLAN.models],
    output:
        table=PATHS.result("certified_accuracy.tex"),
        csv=PATHS.result("certified_accuracy.csv"),
        figure=PATHS.result("certified_accuracy.pdf"),
    params:
        models=PLAN.models,
        radii=PLAN.report_radii,
        max_radius=config["report"]["figure_max_radius"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("summary"),
    benchmark:
        PATHS.benchmark("summary"),
    localrule: True
    script:
        "../workflow_scripts/summary.py"


rule ensemble_summary:
    input:
        certificates=[PLAN.ensemble_certificate(e) for e in PLAN.ensembles],
        adaptive=[Paths.fill(PATHS.adaptive, **e) for e in PLAN.adaptive],
    output:
        table=PATHS.result("ensembles.tex"),
        csv=PATHS.result("ensembles.csv"),
        adaptive=PATHS.result("adaptive.csv"),
    params:
        ensembles=PLAN.ensembles,
        evaluation=[PLAN.ensemble_evaluation(e["dataset"]) for e in PLAN.ensembles],
        adaptive=PLAN.adaptive,
        radii=PLAN.report_radii,
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("ensemble_summary"),
    benchmark:
        PATHS.benchmark("ensemble_summary"),
    localrule: True
    script:
        "../workflow_scripts/ensemble_summary.py"


rule comparison:
    input:
        reported=REPORTED,
        tables=[Paths.fill(PATHS.table_csv, table=name) for name in TABLES],
    output:
        md=PATHS.result("comparison.md"),
        tex=report(PATHS.result("comparison.tex"), caption="../report/comparison.rst", category="Comparison"),
        csv=report(PATHS.result("comparison.csv"), caption="../report/comparison.rst", category="Comparison"),
        summary=report(PATHS.result("comparison_summary.csv"), caption="../report/comparison_summary.rst",
                       category="Comparison"),
    params:
        datasets=", ".join(f"{k}: {v}" for k, v in config["paper"].items() if k in ("main", "svhn", "imagenet")),
        time_tolerance=config["report"]["time_tolerance"],
        level=config["report"]["bootstrap"]["level"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("paper/comparison"),
    benchmark:
        PATHS.benchmark("paper/comparison"),
    localrule: True
    script:
        "../workflow_scripts/comparison.py"


rule certified_accuracy_curves:
    input:
        certificates=curve_certificates,
    output:
        report(PATHS.curves, caption="../report/curves.rst", category="Curves",
               labels={"dataset": "{dataset}", "sigma": "{sigma}"}),
    params:
        sources=curve_sources,
        max_radius=config["report"]["figure_max_radius"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("paper/curves_{dataset}_sigma{sigma}"),
    benchmark:
        PATHS.benchmark("paper/curves_{dataset}_sigma{sigma}"),
    localrule: True
    script:
        "../workflow_scripts/certified_accuracy_curves.py"


rule provenance_table:
    input:
        models=[Paths.fill(PATHS.certificate_record, **m) for m in PLAN.models],
        ensembles=[Paths.fill(PATHS.ensemble_record, **e) for e in PLAN.ensembles],
    output:
        report(PATHS.result("provenance.csv"), caption="../report/provenance.rst", category="Provenance"),
    params:
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        PATHS.log("paper/provenance"),
    benchmark:
        PATHS.benchmark("paper/provenance"),
    localrule: True
    script:
        "../workflow_scripts/provenance_table.py"
